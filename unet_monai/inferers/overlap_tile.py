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
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from tqdm import tqdm

__all__ = ["OverlapTileInferer", "mirror_pad"]


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror (reflect) padding of ``x`` ``(B, C, *S)`` by ``pads[i] = (before, after)`` voxels on axis i.

    The same values as ``numpy.pad(mode="reflect")``: the edge voxel is not repeated, and pads wider than
    the axis are reflected again and again, as the paper's overlap-tile figure shows. An axis of size 1 is
    repeated. ``torch.nn.functional.pad`` refuses reflect pads that are not smaller than the axis, so each
    axis is gathered through a reflected index instead (one ``index_select`` per padded axis).
    """
    for axis, (before, after) in enumerate(pads):
        if before < 0 or after < 0:
            raise ValueError(f"pads must be >= 0, got {tuple(pads)}.")
        if before == 0 and after == 0:
            continue
        size = x.shape[2 + axis]
        index = torch.arange(-before, size + after, device=x.device)
        if size == 1:
            index = torch.zeros_like(index)
        else:
            period = 2 * (size - 1)
            index = index.remainder(period)
            index = torch.where(index >= size, period - index, index)
        x = x.index_select(2 + axis, index)
    return x


def _unwrap(network: Callable) -> Any:
    """The module that knows the shape arithmetic: through DDP / DataParallel wrappers."""
    return getattr(network, "module", network)


class OverlapTileInferer(Inferer):
    """Overlap-tile inference (Ronneberger et al. 2015, Fig. 2) for :class:`~unet_monai.networks.PaperUNet`.

    Args:
        roi_size: wanted output tile size in voxels, per spatial axis (an int for all axes). It is rounded
            up to the nearest size the network can produce.
        sw_batch_size: tiles per forward pass.
        overlap: only for same-padding networks: window overlap passed to MONAI's sliding window.
        mode: only for same-padding networks: ``"constant"`` or ``"gaussian"`` blending.
        progress: show a progress bar over tile batches.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        mode: str = "constant",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
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
        if net.padding == "same":
            window = SlidingWindowInferer(roi, self.sw_batch_size, self.overlap, self.mode, progress=self.progress)
            return window(inputs, network, *args, **kwargs)  # type: ignore[return-value]
        # Tiles start on multiples of 2**depth so that every tile sees the same max-pooling grid as the whole
        # image: then a tile's output equals the whole-image output voxel for voxel. Valid output sizes are
        # never such multiples (388 = 24 * 16 + 4), so neighbouring tiles overlap by a few voxels.
        grid = 2**net.depth
        tile_in = net.input_shape_for([max(r, grid) for r in roi])
        tile_out = net.output_shape(tile_in)
        strides = [t // grid * grid for t in tile_out]
        counts = [1 + max(0, math.ceil((s - t) / st)) for s, t, st in zip(spatial, tile_out, strides)]
        covered = [(n - 1) * st + t for n, st, t in zip(counts, strides, tile_out)]
        ctx = net.context
        pads = [(ctx, ctx + c - s) for s, c in zip(spatial, covered)]
        padded = mirror_pad(torch.as_tensor(inputs), pads)  # (B, C, *(covered + 2 ctx))

        starts = list(itertools.product(*[range(0, n * st, st) for n, st in zip(counts, strides)]))
        jobs = [(b, start) for b in range(inputs.shape[0]) for start in starts]
        output: torch.Tensor | None = None
        batches = range(0, len(jobs), self.sw_batch_size)
        for first in tqdm(batches, desc="overlap-tile", disable=not self.progress, leave=False):
            chunk = jobs[first : first + self.sw_batch_size]
            tiles = torch.stack([self._tile(padded[b], start, tile_in) for b, start in chunk])
            pred = network(tiles, *args, **kwargs)  # (n, out_channels, *tile_out)
            if output is None:
                output = pred.new_empty((inputs.shape[0], pred.shape[1], *covered))
            for (b, start), tile in zip(chunk, pred):
                output[(b, slice(None), *[slice(s, s + t) for s, t in zip(start, tile_out)])] = tile  # type: ignore[index]
        assert output is not None  # at least one tile exists for a non-empty image
        output = output[(slice(None), slice(None), *[slice(0, s) for s in spatial])]  # type: ignore[index]
        if isinstance(inputs, MetaTensor):
            output = MetaTensor(output, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return output

    @staticmethod
    def _tile(image: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        """The input tile ``(C, *size)`` of ``image`` ``(C, *S)`` whose output starts at ``start``."""
        return image[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]
