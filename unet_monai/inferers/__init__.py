"""Inference over whole images: the paper's overlap-tile strategy, and mixed precision for any inferer."""

from unet_monai.inferers.autocast import AutocastInferer, fastest_autocast_dtype
from unet_monai.inferers.overlap_tile import OverlapTileInferer, mirror_pad

__all__ = ["AutocastInferer", "fastest_autocast_dtype", "OverlapTileInferer", "mirror_pad"]
