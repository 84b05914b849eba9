"""The paper's overlap-tile strategy as a MONAI ``Inferer``.

MONAI's ``sliding_window_inference`` reads a network output that is smaller than its input window as a
rescaled window, so the centre crop of a valid-padding network lands in the wrong place. Here the
*output* space is tiled exactly: each output tile is predicted from an input tile that carries
``context`` extra voxels per side, the image borders are mirrored, and every output voxel is computed
once, apart from overlaps of less than ``2 ** depth`` voxels that keep each tile on the whole image's
max-pooling grid. The result equals whole-image inference. Same-padding networks go to MONAI's
``SlidingWindowInferer``.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from tqdm import tqdm

from unet_monai.io.memmap import release_pages, slabs

__all__ = ["OverlapTileInferer", "mirror_pad", "reflect_index"]


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


_OUTPUTS = ("logits", "argmax", "threshold")
_SLAB_VOXELS = 1 << 20  # voxels per slab when streaming statistics over an image (8 MB in float64)


def _mean_std(image: torch.Tensor) -> tuple[float, float]:
    """Mean and population standard deviation of all voxels of ``image`` ``(C, *S)``, in float64, read in slabs
    along its outermost axis in memory (contiguous in a memory-mapped file) so that it is never copied whole.
    A standard deviation of 0 is returned as 1 (MONAI's ``NormalizeIntensity`` does the same)."""
    total, squares, count = 0.0, 0.0, 0
    shift = float("nan")  # a first estimate, subtracted for a stable variance
    for slab in slabs(image, _SLAB_VOXELS):  # a memory-mapped image's pages leave memory slab by slab
        slab = slab.to(torch.float64, copy=True)  # the one temporary per slab: the steps below work in place
        if math.isnan(shift):
            shift = float(slab.mean())
        slab.sub_(shift)
        total += float(slab.sum())
        squares += float(slab.square_().sum())
        count += slab.numel()
    if count == 0:
        raise ValueError(f"cannot normalise an image with no voxels, got shape {tuple(image.shape)}.")
    mean = total / count
    std = math.sqrt(max(squares / count - mean * mean, 0.0))
    return mean + shift, std if std > 0 else 1.0


def _axes_outermost_first(image: torch.Tensor) -> list[int]:
    """The spatial axes of ``image`` ``(C, *S)`` ordered by their stride in memory, outermost first (axes of one
    voxel last): ``[0, 1, 2]`` for a C-ordered volume, ``[2, 1, 0]`` for a NIfTI file's Fortran order."""
    axes = range(image.dim() - 1)
    return sorted(axes, key=lambda a: (image.shape[1 + a] > 1, image.stride(1 + a), -a), reverse=True)


def _release_rows(data: torch.Tensor, axis: int, done: tuple[int, int], upto: tuple[int, int]) -> tuple[int, int]:
    """Release (:func:`~unet_monai.io.memmap.release_pages`) the memory-mapped pages of ``data`` ``(B, C, *S)``
    from position ``done`` up to ``upto`` (``(batch, row)`` along spatial ``axis``, end excluded), where ``axis`` is
    the outermost in memory so that those rows are contiguous; returns the new position."""
    if upto <= done:
        return done
    for b in range(done[0], upto[0] + 1):
        image = data[b]
        if _axes_outermost_first(image)[0] != axis:
            break
        lo = done[1] if b == done[0] else 0
        hi = upto[1] if b == upto[0] else image.shape[1 + axis]
        if hi > lo:
            release_pages(image.narrow(1 + axis, lo, hi - lo))
    return upto


def _reduce(pred: torch.Tensor, output: str) -> torch.Tensor:
    """``(n, C, *S)`` logits -> what ``output`` asks for: logits, or ``(n, 1, *S)`` uint8 labels."""
    if output == "argmax":
        return pred.argmax(dim=1, keepdim=True).to(torch.uint8)
    if output == "threshold":
        if pred.shape[1] != 1:
            raise ValueError(f"output='threshold' needs a one-channel network, got {pred.shape[1]} channels.")
        return (pred > 0).to(torch.uint8)  # sigmoid(x) > 0.5  <=>  x > 0
    return pred


def _unwrap(network: Callable) -> Any:
    """The module that knows the shape arithmetic: through DDP / DataParallel and other ``.module`` wrappers."""
    while not hasattr(network, "output_shape") and hasattr(network, "module"):
        network = network.module
    return network


class OverlapTileInferer(Inferer):
    """Overlap-tile inference (Ronneberger et al. 2015, Fig. 2) for :class:`~unet_monai.networks.PaperUNet`.

    Args:
        roi_size: wanted output tile size in voxels, per spatial axis (an int for all axes). It is rounded
            up to the nearest size the network can produce.
        sw_batch_size: tiles per forward pass.
        overlap: only for same-padding networks: window overlap passed to MONAI's sliding window.
        mode: only for same-padding networks: ``"constant"`` or ``"gaussian"`` blending.
        progress: show a progress bar over tile batches.
        output: ``"logits"`` (default: the network's output, ``(B, out_channels, *S)`` float), ``"argmax"``
            (class indices, ``(B, 1, *S)`` uint8) or ``"threshold"`` (one-channel networks: sigmoid > 0.5,
            ``(B, 1, *S)`` uint8). Valid networks reduce each tile as it comes, which is exact because every
            output voxel comes from one tile: no float map of the whole volume is ever held.
        margin: only for same-padding networks: instead of MONAI's blended sliding window, tile with windows
            of ``roi_size`` (rounded up to multiples of ``2 ** depth``) and keep each window's centre, ``margin``
            voxels in from every side (the overlap-tile strategy applied to a padded network; the image is
            mirrored at its borders). None (default) uses MONAI's ``SlidingWindowInferer``.
        output_file: with ``"argmax"`` / ``"threshold"``, write the result into this file as a memory-mapped
            uint8 array (``numpy.memmap``, C order, shape ``(B, 1, *S)``) instead of RAM.
        memmap_dir: like ``output_file``, but an unnamed temporary file in this folder (created if missing),
            removed by the system when the result is freed: for a pipeline that saves the labels in another
            format afterwards. Its voxels lie in the input's memory order (a NIfTI file's Fortran order), so the
            result may not be contiguous in C order.
        normalize: z-score each image of the batch with its own mean and (population) standard deviation, as
            MONAI's ``NormalizeIntensity`` does, applied to each tile as it is gathered: the statistics come from
            one streamed pass in slabs, so a memory-mapped input is never copied whole. A constant image is only
            shifted (standard deviation taken as 1, as MONAI does).

    Input may be a memory-mapped array wrapped as a tensor (``torch.from_numpy(numpy.memmap)``, or the
    ``dataobj`` of an uncompressed NIfTI): each tile gathers only its own voxels, mirrored at the borders,
    so the input is never copied or padded whole. Tiles run row by row along the input's outermost axis in
    memory (the last axis of a NIfTI file), and the pages of mapped input and output rows that no tile needs any
    more leave the process's memory (:func:`~unet_monai.io.memmap.release_pages`), so peak memory is bounded by
    a row of tiles, not by the volume.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        mode: str = "constant",
        progress: bool = False,
        output: str = "logits",
        output_file: str | None = None,
        margin: int | None = None,
        memmap_dir: str | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}.")
        if (output_file is not None or memmap_dir is not None) and output == "logits":
            raise ValueError("output_file and memmap_dir need output='argmax' or 'threshold' (a uint8 label map).")
        if output_file is not None and memmap_dir is not None:
            raise ValueError(f"give output_file or memmap_dir, not both (got {output_file!r} and {memmap_dir!r}).")
        self.output = output
        self.output_file = output_file
        self.memmap_dir = memmap_dir
        self.normalize = normalize
        self._mapped: np.memmap | None = None
        if margin is not None and margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}.")
        self.margin = margin
        self.roi_size = roi_size
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self.mode = mode
        self.progress = progress

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``inputs`` ``(B, C, H, W[, D])`` -> ``(B, out_channels, H, W[, D])``, aligned voxel for voxel."""
        net = _unwrap(network)
        if not hasattr(net, "output_shape") or not hasattr(net, "context"):
            raise TypeError(
                "network must be a PaperUNet (or wrap one as .module) for its shape arithmetic, "
                f"got {type(net).__name__}."
            )
        spatial = tuple(inputs.shape[2:])
        roi = (self.roi_size,) * len(spatial) if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if len(roi) != len(spatial):
            raise ValueError(
                f"roi_size must have {len(spatial)} sizes for input shape {tuple(inputs.shape)}, got {roi}."
            )
        grid = 2**net.depth
        stats = [_mean_std(inputs[b]) for b in range(inputs.shape[0])] if self.normalize else None
        if net.padding == "same" and self.margin is None:
            window = SlidingWindowInferer(roi, self.sw_batch_size, self.overlap, self.mode, progress=self.progress)
            whole = inputs
            if stats is not None:  # MONAI's windows read the whole input: normalise it in RAM
                whole = torch.stack([(torch.as_tensor(inputs[b]).float() - m) / sd for b, (m, sd) in enumerate(stats)])
            result = window(whole, network, *args, **kwargs)
            reduced = _reduce(torch.as_tensor(result), self.output)
            return self._finish(self._store(reduced), inputs)
        if net.padding == "same":
            # overlap-tile for a same-padding net: windows of roi_size (multiples of 2**depth), of which only
            # the centre, ``margin`` voxels in from each side, is kept: the zero padding at window borders
            # never reaches the result, and each voxel is predicted about once
            ctx = crop = int(self.margin)  # type: ignore[arg-type]
            tile_in = [math.ceil(max(r, 2 * ctx + grid) / grid) * grid for r in roi]
            tile_out = [t - 2 * ctx for t in tile_in]
        else:
            # Tiles start on multiples of 2**depth so that every tile sees the same max-pooling grid as the
            # whole image: then a tile's output equals the whole-image output voxel for voxel. Valid output
            # sizes are never such multiples (388 = 24 * 16 + 4), so neighbouring tiles overlap by a few voxels.
            tile_in = list(net.input_shape_for([max(r, grid) for r in roi]))
            tile_out = list(net.output_shape(tile_in))
            ctx, crop = net.context, 0
        strides = (
            [max(t // grid * grid, 1) for t in tile_out] if crop == 0 else [max(t // grid, 1) * grid for t in tile_out]
        )
        counts = [1 + max(0, math.ceil((s - t) / st)) for s, t, st in zip(spatial, tile_out, strides)]
        source = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)

        # Tiles run row by row along the input's outermost axis in memory (the last one of a NIfTI file), so that
        # the rows behind them can be released from memory as they finish (memory-mapped input and output).
        order = _axes_outermost_first(source[0]) if source.numel() else list(range(len(spatial)))
        outer = order[0]
        starts = []
        for combo in itertools.product(*[range(0, counts[a] * strides[a], strides[a]) for a in order]):
            corner = [0] * len(spatial)
            for a, position in zip(order, combo):
                corner[a] = position
            starts.append(tuple(corner))
        jobs = [(b, start) for b in range(inputs.shape[0]) for start in starts]
        output: torch.Tensor | None = None
        done_in = done_out = (0, 0)  # (batch, row): everything before it along ``outer`` has been released
        batches = range(0, len(jobs), self.sw_batch_size)
        for first in tqdm(batches, desc="overlap-tile", disable=not self.progress, leave=False):
            chunk = jobs[first : first + self.sw_batch_size]
            b0, row = chunk[0][0], chunk[0][1][outer]
            done_in = _release_rows(source, outer, done_in, (b0, max(row - ctx, 0)))
            if output is not None and (self.memmap_dir is not None or self.output_file is not None):
                done_out = _release_rows(output, outer, done_out, (b0, row))
            tiles = torch.stack([self._gather(source[b], start, tile_in, ctx) for b, start in chunk])
            if stats is not None:
                mean = tiles.new_tensor([stats[b][0] for b, _ in chunk]).view(-1, *[1] * (tiles.dim() - 1))
                std = tiles.new_tensor([stats[b][1] for b, _ in chunk]).view_as(mean)
                tiles = (tiles - mean) / std
            pred = network(tiles, *args, **kwargs)  # (n, C, *tile_out), or (n, C, *tile_in) for a same net
            if crop:
                pred = pred[(slice(None), slice(None), *[slice(crop, crop + t) for t in tile_out])]
            pred = _reduce(pred, self.output)
            if output is None:
                output = self._allocate(pred, (inputs.shape[0], pred.shape[1], *spatial), order)
            for (b, start), tile in zip(chunk, pred):
                # each tile writes the voxels it owns, up to the next tile's start (the last one: to the image end),
                # so every voxel is written once, by the tile with the largest start that covers it
                keep = [
                    min(t, s - st) if st == (n - 1) * step else step
                    for t, s, st, step, n in zip(tile_out, spatial, start, strides, counts)
                ]
                region = (b, slice(None), *[slice(st, st + k) for st, k in zip(start, keep)])
                output[region] = tile[(slice(None), *[slice(0, k) for k in keep])].to(output.dtype)  # type: ignore[index]
        if output is None:
            raise ValueError(f"inputs must have at least one voxel, got shape {tuple(inputs.shape)}.")
        return self._finish(output, inputs)

    def _allocate(self, pred: torch.Tensor, shape: tuple[int, ...], order: Sequence[int] | None = None) -> torch.Tensor:
        """The output array ``shape`` ``(B, C, *S)``: in RAM, memory-mapped in ``output_file`` (C order), or in an
        unnamed file of ``memmap_dir`` whose spatial axes lie in memory in ``order`` (outermost first: the input's
        layout, so that finished rows are contiguous and can be released)."""
        if self.memmap_dir is not None:
            os.makedirs(self.memmap_dir, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.memmap_dir) as unnamed:  # the mapping outlives the file object
                flat = torch.from_numpy(np.memmap(unnamed, dtype=np.uint8, mode="w+", shape=(math.prod(shape),)))
            dims = [0, 1, *[2 + a for a in (order if order is not None else range(len(shape) - 2))]]
            strides, step = [0] * len(shape), 1
            for dim in reversed(dims):
                strides[dim], step = step, step * shape[dim]
            return flat.as_strided(shape, strides)
        if self.output_file is None:
            return pred.new_empty(shape)
        self._mapped = np.lib.format.open_memmap(self.output_file, mode="w+", dtype=np.uint8, shape=shape)
        return torch.from_numpy(self._mapped)

    def _store(self, result: torch.Tensor) -> torch.Tensor:
        if self.output_file is None and self.memmap_dir is None:
            return result
        stored = self._allocate(result, tuple(result.shape))
        stored.copy_(result)
        return stored

    def _finish(self, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Flush a memory-mapped output and keep the input's metadata (affine) on the result."""
        if self._mapped is not None:
            self._mapped.flush()
            self._mapped = None
        if isinstance(inputs, MetaTensor):
            return MetaTensor(output, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return output

    @staticmethod
    def _gather(image: torch.Tensor, start: Sequence[int], size: Sequence[int], ctx: int) -> torch.Tensor:
        """The input tile ``(C, *size)`` whose output starts at output voxel ``start``: image voxels
        ``start - ctx .. start - ctx + size - 1`` per axis, mirrored where they fall outside ``image`` ``(C, *S)``.
        Reads only those voxels (a memory-mapped image stays on disk but for them): every axis is first narrowed
        (a view) to the voxels the tile reads, and only then are the mirrored axes gathered, so no copy is ever
        larger than the tile."""
        tile, mirrored = image, []
        for axis, (st, n) in enumerate(zip(start, size)):
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
