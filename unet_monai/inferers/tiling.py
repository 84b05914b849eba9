"""The overlap-tile plan: where the tiles of an image lie, and how each input tile is gathered with mirrored borders.

A valid-padding network maps an input tile of ``tile_in`` voxels to an output tile of ``tile_out`` voxels, ``context``
voxels in from each side. The output space is tiled exactly; tiles start on multiples of the network's pooling grid,
so every tile sees the whole image's max-pooling grid and its output equals the whole-image output voxel for voxel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from unet_monai.networks import PaperUNet

__all__ = ["TilePlan", "gather_tile", "mirror_pad", "reflect_index"]


def reflect_index(size: int, start: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices into an axis of ``size`` voxels for positions ``start .. start + length - 1`` of its mirror
    (reflect) extension, repeated as often as needed: ``numpy.pad(mode="reflect")`` semantics."""
    index = torch.arange(start, start + length, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror (reflect) padding of ``x`` ``(B, C, *S)`` by ``pads[i] = (before, after)`` voxels on axis i.

    The same values as ``numpy.pad(mode="reflect")``: the edge voxel is not repeated, and pads wider than
    the axis are reflected again and again, as the paper's overlap-tile figure shows. An axis of size 1 is
    repeated. ``torch.nn.functional.pad`` refuses reflect pads that are not smaller than the axis, so each
    axis is gathered through :func:`reflect_index` instead (one ``index_select`` per padded axis).
    """
    for axis, (before, after) in enumerate(pads):
        if before < 0 or after < 0:
            raise ValueError(f"pads must be >= 0, got {tuple(pads)}.")
        if before == 0 and after == 0:
            continue
        size = x.shape[2 + axis]
        x = x.index_select(2 + axis, reflect_index(size, -before, size + before + after, x.device))
    return x


def gather_tile(image: torch.Tensor, start: Sequence[int], size: Sequence[int], context: Sequence[int]) -> torch.Tensor:
    """The input tile ``(C, *size)`` whose output starts at output voxel ``start``: image voxels
    ``start - context .. start - context + size - 1`` per axis, mirrored where they fall outside ``image`` ``(C, *S)``.

    Reads only those voxels (a memory-mapped image stays on disk but for them): every axis is first narrowed (a view)
    to the voxels the tile reads, and only then are the mirrored axes gathered, so no copy is ever larger than the
    tile. Integer images come back as float32.
    """
    tile, mirrored = image, []
    for axis, (st, n, ctx) in enumerate(zip(start, size, context)):
        extent = image.shape[1 + axis]
        lo = st - ctx
        if lo >= 0 and lo + n <= extent:
            tile = tile.narrow(1 + axis, lo, n)
            continue
        index = reflect_index(extent, lo, n, image.device)
        first = int(index.min())
        tile = tile.narrow(1 + axis, first, int(index.max()) - first + 1)
        mirrored.append((1 + axis, index - first))
    for axis, index in mirrored:
        tile = tile.index_select(axis, index)
    return tile.to(torch.float32) if not tile.is_floating_point() else tile.contiguous()


@dataclass(frozen=True)
class TilePlan:
    """The tiles that cover an image of ``spatial`` voxels, all sizes per spatial axis in voxels.

    Attributes:
        spatial: the image's spatial shape.
        tile_in: input tile size (what the network reads).
        tile_out: the part of each tile's output that is kept.
        context: input voxels before the kept output, per side (the network's context, or a same-padding
            network's margin).
        crop: voxels cut from each side of the network's output before it is kept (0 for a valid network, whose
            output is already the centre).
        strides: distance between tile starts.
        counts: tiles along each axis.
    """

    spatial: tuple[int, ...]
    tile_in: tuple[int, ...]
    tile_out: tuple[int, ...]
    context: tuple[int, ...]
    crop: tuple[int, ...]
    strides: tuple[int, ...]
    counts: tuple[int, ...]

    @classmethod
    def for_valid_network(cls, net: PaperUNet, spatial: Sequence[int], roi: Sequence[int]) -> TilePlan:
        """Tiles for a valid-padding :class:`~unet_monai.networks.PaperUNet` ``net`` whose outputs are at least
        ``roi`` voxels. Tiles start on multiples of the pooling grid; valid output sizes are never such multiples
        (388 = 24 * 16 + 4), so neighbouring tiles overlap by a few voxels."""
        grid = net.pool_grid
        tile_in = tuple(net.input_shape_for([max(r, g) for r, g in zip(roi, grid)]))
        tile_out = tuple(net.output_shape(tile_in))
        strides = tuple(max(t // g * g, 1) for t, g in zip(tile_out, grid))
        return cls._make(spatial, tile_in, tile_out, net.context_per_axis, (0,) * len(spatial), strides)

    @classmethod
    def for_same_network(cls, net: PaperUNet, spatial: Sequence[int], roi: Sequence[int], margin: int) -> TilePlan:
        """Overlap-tile for a same-padding network: windows of ``roi`` (rounded up to multiples of the pooling grid),
        of which only the centre, ``margin`` voxels in from each side, is kept: the zero padding at window borders
        never reaches the result, and each voxel is predicted about once."""
        grid = net.pool_grid
        tile_in = tuple(math.ceil(max(r, 2 * margin + g) / g) * g for r, g in zip(roi, grid))
        tile_out = tuple(t - 2 * margin for t in tile_in)
        strides = tuple(max(t // g, 1) * g for t, g in zip(tile_out, grid))
        margins = (margin,) * len(spatial)
        return cls._make(spatial, tile_in, tile_out, margins, margins, strides)

    @classmethod
    def _make(cls, spatial, tile_in, tile_out, context, crop, strides) -> TilePlan:  # type: ignore[no-untyped-def]
        counts = tuple(1 + max(0, math.ceil((s - t) / st)) for s, t, st in zip(spatial, tile_out, strides))
        return cls(tuple(spatial), tile_in, tile_out, tuple(context), tuple(crop), strides, counts)

    def starts(self, order: Sequence[int]) -> Iterator[tuple[int, ...]]:
        """The output start of every tile, row by row along ``order[0]`` (then ``order[1]``, ...)."""
        for combo in itertools.product(*[range(0, self.counts[a] * self.strides[a], self.strides[a]) for a in order]):
            corner = [0] * len(self.spatial)
            for a, position in zip(order, combo):
                corner[a] = position
            yield tuple(corner)

    def owned(self, start: Sequence[int]) -> tuple[int, ...]:
        """How many voxels from ``start`` the tile there writes, per axis: up to the next tile's start (the last tile:
        to the image end), so that every voxel is written once, by the tile with the largest start that covers it."""
        return tuple(
            min(t, s - st) if st == (n - 1) * step else step
            for t, s, st, step, n in zip(self.tile_out, self.spatial, start, self.strides, self.counts)
        )
