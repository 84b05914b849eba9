"""The paper's overlap-tile strategy as a MONAI ``Inferer``.

MONAI's ``sliding_window_inference`` reads a network output that is smaller than its input window as a
rescaled window, so the centre crop of a valid-padding network lands in the wrong place. Here the
*output* space is tiled exactly: each output tile is predicted from an input tile that carries
``context`` extra voxels per side, the image borders are mirrored, and every output voxel is computed
once, apart from overlaps of less than the pooling grid that keep each tile on the whole image's
max-pooling grid. The result equals whole-image inference. Same-padding networks go to MONAI's
``SlidingWindowInferer``.

This module runs the tiles; the plan is in :mod:`~unet_monai.inferers.tiling`, the output in
:mod:`~unet_monai.inferers.aggregation`, and the memory handling of mapped volumes in :mod:`unet_monai.memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from tqdm import tqdm

from unet_monai.inferers.aggregation import OUTPUTS, TileAggregator, reduce_logits
from unet_monai.inferers.tiling import TilePlan, gather_tile
from unet_monai.memory import axes_outermost_first, release_rows, streamed_mean_std

__all__ = ["OverlapTileInferer"]


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
    more leave the process's memory (:func:`~unet_monai.memory.release_pages`), so peak memory is bounded by
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
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        if (output_file is not None or memmap_dir is not None) and output == "logits":
            raise ValueError("output_file and memmap_dir need output='argmax' or 'threshold' (a uint8 label map).")
        if output_file is not None and memmap_dir is not None:
            raise ValueError(f"give output_file or memmap_dir, not both (got {output_file!r} and {memmap_dir!r}).")
        self.output = output
        self.output_file = output_file
        self.memmap_dir = memmap_dir
        self.normalize = normalize
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
        if not all(hasattr(net, a) for a in ("output_shape", "input_shape_for", "context_per_axis", "pool_grid")):
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
        stats = [streamed_mean_std(inputs[b]) for b in range(inputs.shape[0])] if self.normalize else None
        result = TileAggregator(self.output_file, self.memmap_dir)
        if net.padding == "same" and self.margin is None:
            window = SlidingWindowInferer(roi, self.sw_batch_size, self.overlap, self.mode, progress=self.progress)
            whole = inputs
            if stats is not None:  # MONAI's windows read the whole input: normalise it in RAM
                whole = torch.stack([(torch.as_tensor(inputs[b]).float() - m) / sd for b, (m, sd) in enumerate(stats)])
            result.store(reduce_logits(torch.as_tensor(window(whole, network, *args, **kwargs)), self.output))
            return result.finish(inputs)
        if net.padding == "same":
            plan = TilePlan.for_same_network(net, spatial, roi, int(self.margin))  # type: ignore[arg-type]
        else:
            plan = TilePlan.for_valid_network(net, spatial, roi)
        source = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)

        # Tiles run row by row along the input's outermost axis in memory (the last one of a NIfTI file), so that
        # the rows behind them can be released from memory as they finish (memory-mapped input and output).
        order = axes_outermost_first(source[0]) if source.numel() else list(range(len(spatial)))
        outer = order[0]
        jobs = [(b, start) for b in range(inputs.shape[0]) for start in plan.starts(order)]
        done_in = done_out = (0, 0)  # (batch, row): everything before it along ``outer`` has been released
        batches = range(0, len(jobs), self.sw_batch_size)
        for first in tqdm(batches, desc="overlap-tile", disable=not self.progress, leave=False):
            chunk = jobs[first : first + self.sw_batch_size]
            b0, row = chunk[0][0], chunk[0][1][outer]
            done_in = release_rows(source, outer, done_in, (b0, max(row - plan.context[outer], 0)))
            if result.output is not None and result.is_mapped:
                done_out = release_rows(result.output, outer, done_out, (b0, row))
            tiles = torch.stack([gather_tile(source[b], start, plan.tile_in, plan.context) for b, start in chunk])
            if stats is not None:
                mean = tiles.new_tensor([stats[b][0] for b, _ in chunk]).view(-1, *[1] * (tiles.dim() - 1))
                std = tiles.new_tensor([stats[b][1] for b, _ in chunk]).view_as(mean)
                tiles = (tiles - mean) / std
            pred = network(tiles, *args, **kwargs)  # (n, C, *tile_out), or (n, C, *tile_in) for a same net
            if any(plan.crop):
                pred = pred[(slice(None), slice(None), *[slice(c, c + t) for c, t in zip(plan.crop, plan.tile_out)])]
            pred = reduce_logits(pred, self.output)
            if result.output is None:
                result.allocate(pred, (inputs.shape[0], pred.shape[1], *spatial), order)
            for (b, start), tile in zip(chunk, pred):
                result.write(b, start, plan.owned(start), tile)
        return result.finish(inputs)
