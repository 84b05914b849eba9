"""Inference over whole images: the paper's overlap-tile strategy, and mixed precision for any inferer."""

from unet_monai.inferers.autocast import AutocastInferer
from unet_monai.inferers.overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["AutocastInferer", "OverlapTileInferer", "mirror_pad"]
