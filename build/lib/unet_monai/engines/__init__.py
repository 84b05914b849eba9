"""Engine handlers for MONAI's trainers and evaluators: atomic per-epoch checkpoints for resuming, the training
report (metrics CSV, curves and overlay PNGs), the per-case report of an evaluation, and skip-and-report for
batch runs."""

from unet_monai.engines.case_report import CaseMetricsReport, case_name
from unet_monai.engines.checkpoint import AtomicCheckpointSaver, EpochCheckpointSaver
from unet_monai.engines.skip_failed import CaseFailureReport, FailureTolerantDataset, SkipFailedIteration
from unet_monai.engines.training_report import TrainingReport

__all__ = [
    "AtomicCheckpointSaver",
    "CaseFailureReport",
    "CaseMetricsReport",
    "EpochCheckpointSaver",
    "FailureTolerantDataset",
    "SkipFailedIteration",
    "TrainingReport",
    "case_name",
]
