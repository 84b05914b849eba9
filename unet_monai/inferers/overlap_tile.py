"""The paper's overlap-tile strategy as a MONAI ``Inferer``.

MONAI's ``sliding_window_inference`` reads a network output that is smaller than its input window as a
rescaled window, so the centre crop of a valid-padding network lands in the wrong place. Here the
*output* space is tiled exactly: each output tile is predicted from an input tile that carries
``context`` extra voxels per side, the image borders are mirrored, and every output voxel is computed
once. Same-padding networks go to MONAI's own ``sliding_window_inference``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, sliding_window_inference
from tqdm import tqdm

__all__ = ["OverlapTileInferer", "mirror_pad"]


def mirror_pad(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror (reflect) padding of ``x`` ``(B, C, *S)`` by ``pads[i] = (before, after)`` voxels on axis i.

    Pads wider than the image are reflected repeatedly, as the paper's overlap-tile figure shows;
    ``torch.nn.functional.pad`` alone refuses a reflect pad that is not smaller than the axis.
    """
    remaining = [list(p) for p in pads]
    while any(b > 0 or a > 0 for b, a in remaining):
        step: list[int] = []
        for axis in reversed(range(len(remaining))):  # F.pad takes the last axis first
            size = x.shape[2 + axis]
            before, after = (min(p, size - 1) for p in remaining[axis])
            if size == 1:  # nothing to reflect: repeat the single voxel
                before, after = remaining[axis]
            remaining[axis][0] -= before
            remaining[axis][1] -= after
            step += [before, after]
        mode = "reflect" if min(x.shape[2:]) > 1 else "replicate"
        x = F.pad(x, step, mode=mode)
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

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` ``(B, C, H, W[, D])`` -> ``(B, out_channels, H, W[, D])``, aligned voxel for voxel."""
        net = _unwrap(network)
        if not hasattr(net, "output_shape") or not hasattr(net, "context"):
            raise TypeError(
                f"network must be a PaperUNet (or wrap one as .module) for its shape arithmetic, got {type(net).__name__}."
            )
        spatial = tuple(inputs.shape[2:])
        roi = (self.roi_size,) * len(spatial) if isinstance(self.roi_size, int) else tuple(self.roi_size)
        if len(roi) != len(spatial):
            raise ValueError(f"roi_size must have {len(spatial)} sizes for input shape {tuple(inputs.shape)}, got {roi}.")
        if net.padding == "same":
            return sliding_window_inference(
                inputs, roi, self.sw_batch_size, network, overlap=self.overlap, mode=self.mode,
                progress=self.progress, *args, **kwargs,
            )
        tile_in = net.input_shape_for(roi)
        tile_out = net.output_shape(tile_in)
        ctx = net.context
        counts = [math.ceil(s / t) for s, t in zip(spatial, tile_out)]
        pads = [(ctx, ctx + n * t - s) for s, t, n in zip(spatial, tile_out, counts)]
        padded = mirror_pad(torch.as_tensor(inputs), pads)  # (B, C, *(n * tile_out + 2 ctx))

        starts = list(itertools.product(*[range(0, n * t, t) for n, t in zip(counts, tile_out)]))
        jobs = [(b, start) for b in range(inputs.shape[0]) for start in starts]
        output: torch.Tensor | None = None
        batches = range(0, len(jobs), self.sw_batch_size)
        for first in tqdm(batches, desc="overlap-tile", disable=not self.progress, leave=False):
            chunk = jobs[first : first + self.sw_batch_size]
            tiles = torch.stack([self._tile(padded[b], start, tile_in) for b, start in chunk])
            pred = network(tiles, *args, **kwargs)  # (n, out_channels, *tile_out)
            if output is None:
                full = [n * t for n, t in zip(counts, tile_out)]
                output = pred.new_empty((inputs.shape[0], pred.shape[1], *full))
            for (b, start), tile in zip(chunk, pred):
                output[(b, slice(None), *[slice(s, s + t) for s, t in zip(start, tile_out)])] = tile
        assert output is not None  # at least one tile exists for a non-empty image
        output = output[(slice(None), slice(None), *[slice(0, s) for s in spatial])]
        if isinstance(inputs, MetaTensor):
            output = MetaTensor(output, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return output

    @staticmethod
    def _tile(image: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
        """The input tile ``(C, *size)`` of ``image`` ``(C, *S)`` whose output starts at ``start``."""
        return image[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]
