"""Engine handlers for MONAI's trainers and evaluators: atomic per-epoch checkpoints for resuming, the training
report (metrics CSV, curves and overlay PNGs) and the per-case report of an evaluation."""

from unet_monai.engines.case_report import CaseMetricsReport, case_name
from unet_monai.engines.checkpoint import EpochCheckpointSaver
from unet_monai.engines.training_report import TrainingReport

__all__ = ["CaseMetricsReport", "EpochCheckpointSaver", "TrainingReport", "case_name"]
