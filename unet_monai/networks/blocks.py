"""Building blocks of the paper-style U-Net: two-convolution units, the contracting and expanding steps.

Every block works for 2D and 3D (``spatial_dims``) and for valid (unpadded) or same (zero-padded) convolutions, 3x3
by default; kernel, pooling and upsampling sizes are one int or one per spatial axis (anisotropic voxels). All of
them stay TorchScript-scriptable, since MONAI's ``ckpt_export`` scripts the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from unet_monai.networks.onednn import Conv3d

__all__ = ["ConvNormAct", "DoubleConv", "MaxPool", "Down", "Up", "center_crop_to"]

_CONV = {2: nn.Conv2d, 3: Conv3d}  # Conv3d: one float32 sample on oneDNN (onednn.py)
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


def _per_axis(size: int | Sequence[int]) -> int | tuple[int, ...]:
    """An int as is, a per-axis sequence as a tuple of ints (what torch's layers take)."""
    return int(size) if isinstance(size, int) else tuple(int(s) for s in size)


class ConvNormAct(nn.Sequential):
    """Convolution (with bias), optional MONAI normalisation and ReLU, ``(B, C_in, *S) -> (B, C_out, *S')``.

    In eval mode (eager) a BatchNorm with running statistics is folded into the convolution: one convolution with
    weights ``w * gamma / sqrt(var + eps)`` and bias ``(b - mean) * gamma / sqrt(var + eps) + beta``, then an in-place
    ReLU. The result is the same up to rounding, without the BatchNorm's pass over the feature map and its output
    buffer (about a fifth of a 3D same-padding net's inference time on the CPU, measured with torch.profiler).
    The children and the state dict stay those of ``nn.Sequential(conv, norm, relu)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size in voxels, one for every axis or one per spatial axis (``(3, 3, 1)``: no context
            along the last axis).
        padding: zero padding per side in voxels, one for every axis or one per spatial axis (0 for valid
            convolutions).
        norm: a MONAI ``Norm`` name such as ``"batch"`` or ``("group", {"num_groups": 8})``, or None.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        padding: int | Sequence[int],
        norm: str | tuple | None,
    ) -> None:
        kernel, pad = _per_axis(kernel_size), _per_axis(padding)
        conv = _CONV[spatial_dims](in_channels, out_channels, kernel, padding=pad)  # type: ignore[arg-type]
        layers: list[nn.Module] = [conv]
        if norm is not None:
            layers.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        bn = layers[1] if len(layers) == 3 else None
        self.foldable = isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine and bn.track_running_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.foldable:
            if not self.training and not torch.jit.is_scripting():
                return self._folded(x)
        for layer in self:
            x = layer(x)
        return x

    @torch.jit.unused
    def _folded(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode convolution with the BatchNorm folded into its weights and bias, then ReLU. Eager only: a
        scripted network gets the same folding from ``torch.jit.freeze`` / ``optimize_for_inference``."""
        weight, bias = self._eval_weight_and_bias()
        return torch.relu_(self[0]._conv_forward(x, weight, bias))  # type: ignore[operator]

    @torch.jit.unused
    def _eval_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution's weight and bias with an eval-mode BatchNorm folded in (when foldable)."""
        conv = self[0]
        if not self.foldable:
            return conv.weight, conv.bias  # type: ignore[return-value]
        bn = self[1]  # mypy types the children of an nn.Sequential as Module
        bias, mean, var, gamma, beta = conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias
        assert bias is not None and mean is not None and var is not None and gamma is not None and beta is not None
        scale = gamma * torch.rsqrt(var + bn.eps)  # type: ignore[operator,arg-type]
        weight = conv.weight * scale.reshape([-1] + [1] * (conv.weight.dim() - 1))  # type: ignore[operator]
        return weight, (bias - mean) * scale + beta  # type: ignore[operator]

    @torch.jit.unused
    def forward_with_padding(self, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
        """Eval-mode forward (no norm, or a folded BatchNorm) with ``padding`` zero voxels per side on each spatial
        axis instead of the layer's own: the slabbed inference pass (:mod:`unet_monai.networks.slabs`) leaves the
        row axis unpadded inside the map."""
        weight, bias = self._eval_weight_and_bias()
        conv: nn.Conv2d | nn.Conv3d = self[0]  # type: ignore[assignment]
        op = torch.nn.functional.conv2d if x.dim() == 4 else torch.nn.functional.conv3d
        return torch.relu_(op(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups))


class DoubleConv(nn.Sequential):
    """Two convolutions (3x3 by default), each followed by the optional norm and a ReLU (one level of the paper's U).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: channels of the second convolution (and of the first, unless ``mid_channels`` is given).
        padding: ``"valid"`` (no padding: each convolution trims ``kernel_size - 1`` voxels along an axis) or
            ``"same"`` (``kernel_size // 2`` zeros per side).
        norm: MONAI ``Norm`` name or None (the paper has none).
        kernel_size: odd kernel size of both convolutions, one for every axis or one per spatial axis.
        mid_channels: channels of the first convolution; None: ``out_channels`` (Cicek et al. 2016 use half).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        padding: str,
        norm: str | tuple | None,
        kernel_size: int | Sequence[int] = 3,
        mid_channels: int | None = None,
    ) -> None:
        kernel = _per_axis(kernel_size)
        kernels = (kernel,) * spatial_dims if isinstance(kernel, int) else kernel
        pad = [0 if padding == "valid" else k // 2 for k in kernels]
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, mid, kernel, pad, norm),
            ConvNormAct(spatial_dims, mid, out_channels, kernel, pad, norm),
        )


class MaxPool(nn.Module):
    """Max-pooling with stride equal to its size (2x2(x2) by default), ``(B, C, *S) -> (B, C, *S // pool_size)``, in
    the input's dtype.

    CPU autocast lists ``max_pool3d`` among its float32 operations, so a bf16 feature map would first be copied to
    float32 (twice its size, the largest buffer of a 3D tile's forward pass). A maximum is exact in any dtype, so
    pooling runs with autocast off and gives the same values.

    Args:
        spatial_dims: 2 or 3.
        pool_size: size and stride, one for every axis or one per spatial axis (1: no pooling along that axis).
    """

    def __init__(self, spatial_dims: int, pool_size: int | Sequence[int] = 2) -> None:
        super().__init__()
        size = _per_axis(pool_size)
        self.pool = _POOL[spatial_dims](kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.pool(x)
        return self._pool_in_input_dtype(x)

    @torch.jit.unused
    def _pool_in_input_dtype(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.pool(x)


class Down(nn.Sequential):
    """Max-pooling (2x2(x2), stride 2 by default), then a :class:`DoubleConv`: one step of the contracting path.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: channels of the DoubleConv.
        padding: ``"valid"`` or ``"same"``.
        norm: MONAI ``Norm`` name or None.
        pool_size: pooling size and stride, one for every axis or one per spatial axis.
        kernel_size: kernel size of the DoubleConv, one for every axis or one per spatial axis.
        mid_channels: channels of the DoubleConv's first convolution; None: ``out_channels``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        padding: str,
        norm: str | tuple | None,
        pool_size: int | Sequence[int] = 2,
        kernel_size: int | Sequence[int] = 3,
        mid_channels: int | None = None,
    ) -> None:
        super().__init__(
            MaxPool(spatial_dims, pool_size),
            DoubleConv(spatial_dims, in_channels, out_channels, padding, norm, kernel_size, mid_channels),
        )


def center_crop_to(skip: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Centre-crop ``skip`` ``(B, C, *S)`` to the spatial size of ``reference`` ``(B, C', *S')``, ``S' <= S``.

    The paper's "cropping ... due to the loss of border pixels in every convolution". A view, no copy.
    """
    return _center_crop(skip, list(reference.shape[2:]))


def _center_crop(skip: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Centre-crop ``skip`` ``(B, C, *S)`` to spatial ``size`` (a view)."""
    for dim in range(2, skip.dim()):
        offset = (skip.shape[dim] - size[dim - 2]) // 2
        skip = skip.narrow(dim, offset, size[dim - 2])
    return skip


def _empty_in_layout_of(like: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with the dtype, device and memory format (channels-last or not) of
    ``like``."""
    layout = torch.contiguous_format
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        layout = torch.channels_last
    elif like.dim() == 5 and like.is_contiguous(memory_format=torch.channels_last_3d):
        layout = torch.channels_last_3d
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)


class _CenterCropKeepingLayout(torch.autograd.Function):
    """:func:`_center_crop` whose gradient has the memory format of the input.

    Why our own: the backward of ``narrow`` allocates a contiguous (channels-first) gradient, so on a channels-last
    skip the sum with the pooling's gradient and the ReLU backward mix layouts and run 6-13x slower on the CPU
    (measured: ``add_`` 29 ms instead of 2.3, ``threshold_backward`` 43 ms instead of 7, at 4 x 32 x 280 x 280 bf16).
    """

    @staticmethod
    def forward(ctx, skip: torch.Tensor, size: list[int]) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(skip)  # no extra memory: the ReLU that made the skip keeps it for its backward
        ctx.size = size
        return _center_crop(skip, size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (skip,) = ctx.saved_tensors
        grad_skip = torch.zeros_like(skip, dtype=grad.dtype)  # preserve_format: the skip's layout
        _center_crop(grad_skip, ctx.size).copy_(grad)
        return grad_skip, None


@torch.jit.unused
def _center_crop_for_autograd(skip: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Eager training path of the crop (TorchScript cannot call an autograd Function; scripted nets use narrow)."""
    return _CenterCropKeepingLayout.apply(skip, size)


class Up(nn.Module):
    """One step of the expanding path: upsample (halving the channels by default), crop-and-concat the skip,
    DoubleConv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection from the contracting path.
        out_channels: channels of the DoubleConv (and after the up-convolution, unless ``up_channels`` is given).
        padding: ``"valid"`` or ``"same"``.
        norm: MONAI ``Norm`` name or None.
        upsample: ``"deconv"`` (transposed convolution with kernel size and stride ``scale``: the paper's 2x2
            up-convolution), or an interpolation mode (``"nearest"``, ``"linear"``) followed by a 1x1 convolution.
        norm_act_after_upsample: apply norm (if any) and ReLU after the up-convolution too (the blog
            network does; the paper does not).
        scale: upsampling factor, one for every axis or one per spatial axis (the pool size of the level).
        kernel_size: kernel size of the DoubleConv, one for every axis or one per spatial axis.
        up_channels: channels after the up-convolution; None: ``out_channels`` (the paper halves the channels;
            Cicek et al. 2016 keep them, ``up_channels=in_channels``).
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
        scale: int | Sequence[int] = 2,
        kernel_size: int | Sequence[int] = 3,
        up_channels: int | None = None,
    ) -> None:
        super().__init__()
        factor = _per_axis(scale)
        factors = [factor] * spatial_dims if isinstance(factor, int) else list(factor)
        up_ch = out_channels if up_channels is None else up_channels
        up: list[nn.Module]
        if upsample == "deconv":
            deconv = _CONV_T[spatial_dims](in_channels, up_ch, factor, stride=factor)  # type: ignore[arg-type]
            up = [deconv]
        else:
            mode = _LINEAR_MODE[spatial_dims] if upsample == "linear" else upsample
            align = False if mode != "nearest" else None
            scale_factor = float(factor) if isinstance(factor, int) else tuple(float(f) for f in factors)
            up = [
                nn.Upsample(scale_factor=scale_factor, mode=mode, align_corners=align),
                _CONV[spatial_dims](in_channels, up_ch, kernel_size=1),
            ]
        if norm_act_after_upsample:
            if norm is not None:
                up.append(get_norm_layer(norm, spatial_dims=spatial_dims, channels=up_ch))
            up.append(nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(*up)
        self.skip_channels = skip_channels
        self.up_channels = up_ch
        self.scale: list[int] = factors
        self.conv = DoubleConv(spatial_dims, up_ch + skip_channels, out_channels, padding, norm, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, *S)``, ``skip``: ``(B, skip_channels, *S_skip)`` with ``S_skip >= scale * S``
        -> ``(B, out_channels, *S_out)``."""
        return self.forward_from_levels(x, [skip])

    def forward_from_levels(self, x: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` with the skip taken (popped) from the end of ``levels``, the encoder's feature maps.

        Taking the skip from the list leaves this method the only reference to it (a tensor argument of a module
        call stays referenced by the call until it returns), so each full-resolution map is released as soon as it
        has been used: this bounds an inference pass's peak memory. Without autograd the concatenation is also
        filled in place: the cropped skip is copied in and released before the up-convolution runs, so at most the
        concatenation and one half of it are alive (``torch.cat`` needs both halves and the result at once).
        """
        if torch.is_grad_enabled():
            up = self.upsample(x)  # (B, out_channels, *2S)
            size = list(up.shape[2:])
            if torch.jit.is_scripting():
                skip = _center_crop(levels.pop(), size)
            else:
                skip = _center_crop_for_autograd(levels.pop(), size)
            merged = torch.cat([skip, up], dim=1)
        else:  # neither the skip nor the upsampled map is bound to a name: each goes once copied
            size = self.upsampled_size(x)
            merged = _empty_in_layout_of(levels[-1], [x.shape[0], self.skip_channels + self.up_channels] + size)
            merged[:, : self.skip_channels].copy_(_center_crop(levels.pop(), size))
            merged[:, self.skip_channels :].copy_(self.upsample(x))
        for layer in self.conv:  # not self.conv(merged): the call would hold the concatenation to the end
            merged = layer(merged)
        return merged

    def upsampled_size(self, x: torch.Tensor) -> list[int]:
        """Spatial size of the upsampled ``x`` ``(B, in_channels, *S)``: ``scale * S`` per axis."""
        return [self.scale[i] * x.shape[i + 2] for i in range(x.dim() - 2)]
