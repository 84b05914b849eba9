"""Engine handlers for MONAI's trainers and evaluators: atomic per-epoch checkpoints for resuming, the training
report (metrics CSV, curves and overlay PNGs), a wall-clock budget that anneals the learning rate, the per-case
report of an evaluation, an average of the weights saved as a checkpoint, and skip-and-report for batch runs (with
:class:`~unet_monai.data.FailureTolerantDataset`)."""

from unet_monai.handlers.case_report import CaseMetricsReport, case_name
from unet_monai.handlers.checkpoint import AtomicCheckpointSaver, EpochCheckpointSaver
from unet_monai.handlers.error_report import ErrorReport
from unet_monai.handlers.skip_failed import CaseFailureReport, SkipFailedIteration
from unet_monai.handlers.time_budget import TimeBudget
from unet_monai.handlers.training_report import TrainingReport
from unet_monai.handlers.weight_average import WeightAverage

__all__ = [
    "AtomicCheckpointSaver",
    "CaseFailureReport",
    "CaseMetricsReport",
    "EpochCheckpointSaver",
    "ErrorReport",
    "SkipFailedIteration",
    "TimeBudget",
    "TrainingReport",
    "WeightAverage",
    "case_name",
]
