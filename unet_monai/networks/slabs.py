"""The full-resolution levels of a U-Net's inference pass, computed in slabs along the first spatial axis.

At full resolution a U-Net's inference pass holds its largest maps: the first level's two convolution outputs, and
in the last decoder step the upsampled map, its concatenation with the skip and the two convolution outputs, each as
large as the tile times 32 to 128 channels. Computed a slab of rows at a time (with the halo each convolution needs:
``k // 2`` rows per side for a kernel of ``k`` rows, none for ``k == 1``), those steps hold only the skip and
slab-sized temporaries; the result is the same, since convolutions, the up-convolution, nearest upsampling (by the
level's pool size along the rows, 1 included), folded BatchNorm, ReLU and the 1x1 head only look at neighbouring
voxels. Normalisations over the whole map (instance, group, layer norm) and linear upsampling are not
row-local and keep the whole-map path (:func:`row_local`).

Rows are indices along the first spatial axis (dim 2 of ``(B, C, H, W[, D])``): outermost in memory for
channels-last tensors, so a slab of rows is a contiguous view.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from unet_monai.networks.blocks import ConvNormAct, DoubleConv, Up, _center_crop, _empty_in_layout_of

__all__ = ["row_local", "double_conv_in_slabs", "last_up_in_slabs", "slab_bounds"]

RowSource = Callable[[int, int], torch.Tensor]  # rows [lo, hi) of a map, (B, C, hi - lo, ...)
_ROW_LOCAL_UPSAMPLING = (nn.ConvTranspose2d, nn.ConvTranspose3d, nn.ReLU)  # the 2x2 stride-2 up-convolution


def row_local(block: nn.Module) -> bool:
    """Whether ``block`` (a :class:`DoubleConv`, an :class:`Up`, the 1x1 head) computes each output row from a
    fixed band of input rows, in eval mode: convolutions with no norm or a foldable BatchNorm, the up-convolution or
    nearest upsampling."""
    if block.training:
        return False
    if isinstance(block, DoubleConv):
        return all(len(layer) == 2 or layer.foldable for layer in block.children())  # type: ignore[arg-type]
    if isinstance(block, Up):
        upsample_ok = all(
            isinstance(m, _ROW_LOCAL_UPSAMPLING)
            or row_local(m)  # the 1x1 convolution after an interpolation
            or (isinstance(m, nn.Upsample) and m.mode == "nearest")
            or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats)
            for m in block.upsample
        )
        return upsample_ok and row_local(block.conv)
    return isinstance(block, (nn.Conv2d, nn.Conv3d)) and block.kernel_size[0] == 1


def slab_bounds(rows: int, slabs: int, min_rows: int = 4) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges that split ``rows`` into at most ``slabs`` slabs of at least ``min_rows`` rows."""
    step = max(math.ceil(rows / max(slabs, 1)), min_rows)
    return [(lo, min(lo + step, rows)) for lo in range(0, rows, step)]


def _conv_rows(layer: ConvNormAct, source: RowSource, lo: int, hi: int, rows_in: int) -> torch.Tensor:
    """Output rows ``[lo, hi)`` of one convolution ``layer`` whose input (``rows_in`` rows) is read through ``source``.

    With a kernel of ``k`` rows and ``h = k // 2``: unpadded along the rows (valid, or ``k == 1``), output row r comes
    from input rows r .. r + k - 1. Zero-padded (same): rows ``lo - h .. hi + h - 1`` of the input, with the row
    axis left unpadded inside the map; where the slab meets the map's border, the layer's own zero padding is the
    real one, and the rows it yields beyond the slab are dropped.
    """
    conv: nn.Conv2d | nn.Conv3d = layer[0]  # type: ignore[assignment]
    padding: tuple[int, ...] = conv.padding  # type: ignore[assignment]  # never a string: ConvNormAct pads by ints
    k, pad = conv.kernel_size[0], padding[0]
    if pad == 0:
        return layer(source(lo, hi + k - 1))
    if lo - pad < 0 or hi + pad > rows_in:
        first, last = max(lo - pad, 0), min(hi + pad, rows_in)
        return layer(source(first, last)).narrow(2, lo - first, hi - lo)
    return layer.forward_with_padding(source(lo - pad, hi + pad), [0, *padding[1:]])


def _conv_rows_out(layer: nn.Module, rows_in: int) -> int:
    """Rows of one convolution layer's output for ``rows_in`` input rows."""
    conv: nn.Conv2d | nn.Conv3d = layer[0]  # type: ignore[index]
    return rows_in + 2 * conv.padding[0] - conv.kernel_size[0] + 1  # type: ignore[index,operator]


def _double_conv_rows(block: DoubleConv, source: RowSource, lo: int, hi: int, rows_in: int) -> torch.Tensor:
    """Output rows ``[lo, hi)`` of ``block`` on an input of ``rows_in`` rows read through ``source``."""
    first, second = block[0], block[1]
    rows_mid = _conv_rows_out(first, rows_in)
    return _conv_rows(
        second,  # type: ignore[arg-type]
        lambda a, b: _conv_rows(first, source, a, b, rows_in),  # type: ignore[arg-type]
        lo,
        hi,
        rows_mid,
    )


def _rows_out(block: DoubleConv, rows_in: int) -> int:
    """Rows of ``block``'s output for ``rows_in`` input rows: the same (same padding) or ``2 (k - 1)`` fewer
    (valid, ``k`` the kernel's rows)."""
    return _conv_rows_out(block[1], _conv_rows_out(block[0], rows_in))


def _write_rows(out: torch.Tensor | None, part: torch.Tensor, lo: int, shape: list[int]) -> torch.Tensor:
    """Copy ``part`` into rows ``lo ..`` of ``out``, allocated (``shape``, ``part``'s dtype and layout) on first use."""
    if out is None:
        out = _empty_in_layout_of(part, shape)
    out.narrow(2, lo, part.shape[2]).copy_(part)
    return out


def double_conv_in_slabs(block: DoubleConv, x: torch.Tensor, slabs: int) -> torch.Tensor:
    """``block(x)`` for an eval-mode, :func:`row_local` ``block``, computed in up to ``slabs`` slabs of rows.

    ``x``: ``(B, C_in, H, *S)`` -> ``(B, C_out, H', *S')``; only ``x``, the result and one slab's temporaries are
    held at a time, not the first convolution's whole output.
    """
    rows_in = x.shape[2]
    rows_out = _rows_out(block, rows_in)
    out: torch.Tensor | None = None
    for lo, hi in slab_bounds(rows_out, slabs):
        part = _double_conv_rows(block, lambda a, b: x.narrow(2, a, b - a), lo, hi, rows_in)
        out = _write_rows(out, part, lo, [part.shape[0], part.shape[1], rows_out, *part.shape[3:]])
    assert out is not None
    return out


def last_up_in_slabs(
    up: Up, head: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, skip: torch.Tensor, slabs: int
) -> torch.Tensor:
    """``head(up(x, skip))`` for an eval-mode, :func:`row_local` ``up`` and a pointwise ``head`` (1x1 convolution,
    then an optional sigmoid or softmax), computed in up to ``slabs`` slabs of rows.

    ``x``: ``(B, C_in, *S)``, ``skip``: ``(B, C_skip, *S_skip)`` with ``S_skip >= up.scale * S`` ->
    ``(B, C_head, *S_out)``. The upsampled map, its concatenation with the skip and the two convolution outputs
    exist one slab at a time; an up-convolution or nearest upsampling by ``p`` along the rows (the level's pool size,
    1 for no pooling) makes output row r from input row r // p.
    """
    size = up.upsampled_size(x)
    skip = _center_crop(skip, size)  # a view
    rows_in = size[0]
    scale = up.scale[0]

    def merged(lo: int, hi: int) -> torch.Tensor:
        first, last = lo // scale, -(-hi // scale)
        upsampled = up.upsample(x.narrow(2, first, last - first)).narrow(2, lo - scale * first, hi - lo)
        return torch.cat([skip.narrow(2, lo, hi - lo), upsampled], dim=1)

    rows_out = _rows_out(up.conv, rows_in)  # type: ignore[arg-type]
    out: torch.Tensor | None = None
    for lo, hi in slab_bounds(rows_out, slabs):
        part = head(_double_conv_rows(up.conv, merged, lo, hi, rows_in))
        out = _write_rows(out, part, lo, [part.shape[0], part.shape[1], rows_out, *part.shape[3:]])
    assert out is not None
    return out
