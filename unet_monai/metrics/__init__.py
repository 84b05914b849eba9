"""Segmentation scores beyond MONAI's: the ISBI 2012 EM scores (V_Rand, V_Info, pixel error) and one function
that gathers every score of a case for ``evaluate.json``."""

from unet_monai.metrics.case_scores import case_scores
from unet_monai.metrics.rand_info import cells_from_boundaries, em_segmentation_scores, foreground_restricted_scores

__all__ = ["case_scores", "cells_from_boundaries", "em_segmentation_scores", "foreground_restricted_scores"]
