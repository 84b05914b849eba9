"""Losses: the paper's pixel-weighted cross-entropy."""

from unet_monai.losses.weighted import PixelWeightedCELoss

__all__ = ["PixelWeightedCELoss"]
