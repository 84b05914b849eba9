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


def cicek_unet_3d(in_channels: int = 1, out_channels: int = 3, channel_plan: str = "paper", **kwargs: Any) -> PaperUNet:
    """The 3D U-Net of Cicek et al. (2016): valid padding, three poolings, BatchNorm before each ReLU.

    132x132x116 -> 44x44x28. ``channel_plan="paper"`` (the default) is the paper's: in the analysis path the
    first 3x3x3 convolution of a level has half the channels of the second (32/64, 64/128, 128/256, bottleneck
    256/512); in the synthesis path each 2x2x2 up-convolution keeps the channels (512 -> 512), and both 3x3x3
    convolutions after the concatenation have the level's channels (256, 128, 64). ``channel_plan="2d"`` is the 2D
    paper's scheme at these widths (both convolutions of a level 64, 128, 256, 512; each up-convolution halves the
    channels). ``features`` (default ``(64, 128, 256, 512)``) sets the second convolution of each level in both
    plans; in the paper plan ``mid_features`` defaults to half of it and ``up_features`` to ``features[1:]``.
    ``kwargs`` override any other :class:`PaperUNet` argument.

    Parameters: the paper states 19,069,955, which is this network with ``in_channels=3`` and ``out_channels=3``
    (the paper's three-channel tiles and three labels) counting neither BatchNorm's affine parameters nor the
    up-convolutions' biases (896; with valid padding they are redundant, the next convolution's bias absorbs
    them). Counting every parameter, this network has 19,075,523 (1 input and 2 output channels without
    BatchNorm: 19,069,058).
    """
    if channel_plan not in ("paper", "2d"):
        raise ValueError(f"channel_plan must be 'paper' or '2d', got {channel_plan!r}.")
    features = tuple(kwargs.setdefault("features", (64, 128, 256, 512)))
    if channel_plan == "paper":
        kwargs.setdefault("mid_features", tuple(max(f // 2, 1) for f in features))
        kwargs.setdefault("up_features", features[1:])
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
