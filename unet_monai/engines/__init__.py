"""Engine helpers for MONAI's trainers: atomic per-epoch checkpoints for resuming."""

from unet_monai.engines.checkpoint import EpochCheckpointSaver

__all__ = ["EpochCheckpointSaver"]
