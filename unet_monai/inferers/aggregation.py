"""Where the kept part of each tile goes: the whole-image output, in RAM or in a memory-mapped file, reduced to what
the caller asked for (logits, argmax or threshold labels) as each tile comes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from unet_monai.memory import mapped_npy, unnamed_mapped_array

__all__ = ["OUTPUTS", "TileAggregator", "reduce_logits"]

OUTPUTS = ("logits", "argmax", "threshold")


def reduce_logits(pred: torch.Tensor, output: str) -> torch.Tensor:
    """``(n, C, *S)`` logits -> what ``output`` asks for: logits, or ``(n, 1, *S)`` uint8 labels."""
    if output == "argmax":
        return pred.argmax(dim=1, keepdim=True).to(torch.uint8)
    if output == "threshold":
        if pred.shape[1] != 1:
            raise ValueError(f"output='threshold' needs a one-channel network, got {pred.shape[1]} channels.")
        return (pred > 0).to(torch.uint8)  # sigmoid(x) > 0.5  <=>  x > 0
    return pred


class TileAggregator:
    """The output of one inference call ``(B, C, *S)``: allocated on the first tile, in RAM, in ``output_file``
    (a uint8 ``.npy``, C order) or in an unnamed file of ``memmap_dir`` laid out in the input's memory order.

    Args:
        output_file: path of a ``.npy`` file to hold uint8 labels, or None.
        memmap_dir: folder for an unnamed memory-mapped uint8 output, or None.
    """

    def __init__(self, output_file: str | None = None, memmap_dir: str | None = None) -> None:
        self.output_file = output_file
        self.memmap_dir = memmap_dir
        self.output: torch.Tensor | None = None
        self._mapped: np.memmap | None = None

    @property
    def is_mapped(self) -> bool:
        return self.output_file is not None or self.memmap_dir is not None

    def allocate(self, like: torch.Tensor, shape: Sequence[int], order: Sequence[int] | None = None) -> torch.Tensor:
        """The output array ``shape`` ``(B, C, *S)`` with ``like``'s dtype in RAM; ``order``: the spatial axes'
        memory order (outermost first) of a ``memmap_dir`` output."""
        if self.memmap_dir is not None:
            self.output = unnamed_mapped_array(shape, self.memmap_dir, order)
        elif self.output_file is not None:
            self._mapped, self.output = mapped_npy(self.output_file, shape)
        else:
            self.output = like.new_empty(tuple(shape))
        return self.output

    def write(self, batch: int, start: Sequence[int], owned: Sequence[int], tile: torch.Tensor) -> None:
        """Write the first ``owned`` voxels per axis of ``tile`` ``(C, *tile_out)`` at ``start`` of image ``batch``."""
        if self.output is None:
            raise RuntimeError("TileAggregator.write before allocate.")
        region: tuple[int | slice, ...] = (batch, slice(None), *[slice(st, st + k) for st, k in zip(start, owned)])
        self.output[region] = tile[(slice(None), *[slice(0, k) for k in owned])].to(self.output.dtype)

    def store(self, result: torch.Tensor) -> torch.Tensor:
        """A whole result computed elsewhere (MONAI's sliding window), moved to the mapped output if there is one."""
        if not self.is_mapped:
            self.output = result
            return result
        stored = self.allocate(result, tuple(result.shape))
        stored.copy_(result)
        return stored

    def finish(self, inputs: torch.Tensor) -> torch.Tensor:
        """Flush a memory-mapped output and give the result the input's metadata (affine)."""
        if self.output is None:
            raise ValueError(f"inputs must have at least one voxel, got shape {tuple(inputs.shape)}.")
        if self._mapped is not None:
            self._mapped.flush()
            self._mapped = None
        if isinstance(inputs, MetaTensor):
            return MetaTensor(self.output, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return self.output
