"""Published configurations of :class:`PaperUNet`, as factory functions that bundle configs can ``_target_``."""

from __future__ import annotations

from typing import Any

from unet_monai.networks.unet import PaperUNet

__all__ = ["paper_unet_2d", "cicek_unet_3d", "blog_unet_2d"]


def paper_unet_2d(in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> PaperUNet:
    """The 2D U-Net of Ronneberger et al. (2015): valid padding, features 64..1024, no norm.

    572x572 -> 388x388; 31,030,658 parameters for 1 input and 2 output channels.
    ``kwargs`` override any other :class:`PaperUNet` argument (for example ``dropout=0.5``).
    """
    return PaperUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kwargs)


def cicek_unet_3d(in_channels: int = 1, out_channels: int = 3, **kwargs: Any) -> PaperUNet:
    """The 3D U-Net of Cicek et al. (2016): valid padding, three poolings, BatchNorm before each ReLU.

    132x132x116 -> 44x44x28. Deviation: the channels of a level follow the 2D scheme (both convolutions
    of a level have the same width, 64-128-256-512, and each up-convolution halves them) instead of
    Cicek's doubling inside a level (32/64, 64/128, ...); depth, kernels and shapes are the paper's.
    """
    kwargs.setdefault("features", (64, 128, 256, 512))
    kwargs.setdefault("norm", "batch")
    return PaperUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)


def blog_unet_2d(in_channels: int = 1, out_channels: int = 1, **kwargs: Any) -> PaperUNet:
    """The small network of the blog post this project started from: 487,449 parameters.

    Same padding, features 8-16-32-64-128, BatchNorm + ReLU after every convolution and up-convolution,
    a final 3x3 convolution and a sigmoid; ``(10, 1, 224, 224) -> (10, 1, 224, 224)``.
    """
    settings: dict[str, Any] = dict(
        features=(8, 16, 32, 64, 128),
        padding="same",
        norm="batch",
        norm_act_after_upsample=True,
        final_kernel_size=3,
        final_act="sigmoid",
    )
    settings.update(kwargs)
    return PaperUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **settings)
