"""Building blocks of the paper-style U-Net: two-convolution units, the contracting and expanding steps.

Every block works for 2D and 3D (``spatial_dims``) and for valid (unpadded) or same (zero-padded) 3x3
convolutions. All of them stay TorchScript-scriptable, since MONAI's ``ckpt_export`` scripts the network.
"""

from __future__ import annotations

import torch
from monai.networks.layers.utils import get_norm_layer
from torch import nn

__all__ = ["DoubleConv", "Down", "Up", "center_crop_to"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


def conv_norm_act(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, padding: int, norm: str | tuple | None
) -> nn.Sequential:
    """A convolution (with bias), an optional MONAI normalisation layer and a ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: cubic kernel size in voxels.
        padding: zero padding per side in voxels (0 for valid convolutions).
        norm: a MONAI ``Norm`` name such as ``"batch"`` or ``("group", {"num_groups": 8})``, or None.
    """
    layers: list[nn.Module] = [_CONV[spatial_dims](in_channels, out_channels, kernel_size, padding=padding)]
    if norm is not None:
        layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by the optional norm and a ReLU (one level of the paper's U).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: channels of both convolutions.
        padding: ``"valid"`` (no padding: each convolution trims one voxel per side) or ``"same"``.
        norm: MONAI ``Norm`` name or None (the paper has none).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, padding: str, norm: str | tuple | None
    ) -> None:
        pad = 0 if padding == "valid" else 1
        super().__init__(
            conv_norm_act(spatial_dims, in_channels, out_channels, 3, pad, norm),
            conv_norm_act(spatial_dims, out_channels, out_channels, 3, pad, norm),
        )


class Down(nn.Sequential):
    """2x2(x2) max-pooling with stride 2, then a :class:`DoubleConv`: one step of the contracting path."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, padding: str, norm: str | tuple | None
    ) -> None:
        super().__init__(
            _POOL[spatial_dims](kernel_size=2, stride=2),
            DoubleConv(spatial_dims, in_channels, out_channels, padding, norm),
        )


def center_crop_to(skip: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Centre-crop ``skip`` ``(B, C, *S)`` to the spatial size of ``reference`` ``(B, C', *S')``, ``S' <= S``.

    The paper's "cropping ... due to the loss of border pixels in every convolution". A view, no copy.
    """
    for dim in range(2, skip.dim()):
        offset = (skip.shape[dim] - reference.shape[dim]) // 2
        skip = skip.narrow(dim, offset, reference.shape[dim])
    return skip


class Up(nn.Module):
    """One step of the expanding path: upsample and halve the channels, crop-and-concat the skip, DoubleConv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection from the contracting path.
        out_channels: channels after the up-convolution and of the DoubleConv.
        padding: ``"valid"`` or ``"same"``.
        norm: MONAI ``Norm`` name or None.
        upsample: ``"deconv"`` (2x2 transposed convolution, stride 2: the paper's up-convolution), or an
            interpolation mode (``"nearest"``, ``"linear"``) followed by a 1x1 convolution.
        norm_act_after_upsample: apply norm (if any) and ReLU after the up-convolution too (the blog
            network does; the paper does not).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        padding: str,
        norm: str | tuple | None,
        upsample: str = "deconv",
        norm_act_after_upsample: bool = False,
    ) -> None:
        super().__init__()
        up: list[nn.Module]
        if upsample == "deconv":
            up = [_CONV_T[spatial_dims](in_channels, out_channels, kernel_size=2, stride=2)]
        else:
            mode = _LINEAR_MODE[spatial_dims] if upsample == "linear" else upsample
            align = False if mode != "nearest" else None
            up = [
                nn.Upsample(scale_factor=2.0, mode=mode, align_corners=align),
                _CONV[spatial_dims](in_channels, out_channels, kernel_size=1),
            ]
        if norm_act_after_upsample:
            if norm is not None:
                up.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
            up.append(nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(*up)
        self.conv = DoubleConv(spatial_dims, out_channels + skip_channels, out_channels, padding, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, *S)``, ``skip``: ``(B, skip_channels, *S_skip)`` with ``S_skip >= 2 S``."""
        x = self.upsample(x)  # (B, out_channels, *2S)
        return self.conv(torch.cat([center_crop_to(skip, x), x], dim=1))
