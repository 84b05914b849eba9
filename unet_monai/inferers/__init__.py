"""Inference over whole images: the paper's overlap-tile strategy, mixed precision for any inferer, test-time flips
and test-time BatchNorm adaptation."""

from unet_monai.inferers.autocast import AutocastInferer, fastest_autocast_dtype
from unet_monai.inferers.flip_ensemble import FlipEnsembleInferer, grid_symmetries
from unet_monai.inferers.norm_adapt import BatchNormAdaptInferer, batch_norms
from unet_monai.inferers.overlap_tile import OverlapTileInferer
from unet_monai.inferers.tiling import TilePlan, mirror_pad, reflect_index

__all__ = [
    "AutocastInferer",
    "BatchNormAdaptInferer",
    "batch_norms",
    "fastest_autocast_dtype",
    "FlipEnsembleInferer",
    "grid_symmetries",
    "OverlapTileInferer",
    "mirror_pad",
    "reflect_index",
    "TilePlan",
]
