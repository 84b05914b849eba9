"""Segmentation scores beyond MONAI's: the ISBI 2012 EM scores (V_Rand, V_Info, pixel error), the leaderboard's
best-threshold scores of a probability map, and one function gathering every score of a case for ``evaluate.json``."""

from unet_monai.metrics.case_scores import case_scores
from unet_monai.metrics.challenge import CHALLENGE_THRESHOLDS, challenge_scores, threshold_sweep
from unet_monai.metrics.rand_info import (
    cells_from_boundaries,
    em_segmentation_scores,
    foreground_restricted_scores,
    thin_boundaries,
)

__all__ = [
    "CHALLENGE_THRESHOLDS",
    "challenge_scores",
    "threshold_sweep",
    "case_scores",
    "cells_from_boundaries",
    "em_segmentation_scores",
    "foreground_restricted_scores",
    "thin_boundaries",
]
