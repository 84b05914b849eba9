"""Arrays in memory-mapped files, laid out in a given axis order, and releasing their finished rows.

``numpy.memmap`` maps a file but knows no strided layout beyond C / Fortran order, and nothing frees the pages of
the rows a tiled pass has finished with; these helpers give the overlap-tile inferer outputs that live in a file in
the input's own memory order, so that the rows behind the current tile can leave memory.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch

from unet_monai.memory.pages import release_pages

__all__ = ["axes_outermost_first", "mapped_npy", "release_rows", "unnamed_mapped_array"]


def axes_outermost_first(image: torch.Tensor) -> list[int]:
    """The spatial axes of ``image`` ``(C, *S)`` ordered by their stride in memory, outermost first (axes of one
    voxel last): ``[0, 1, 2]`` for a C-ordered volume, ``[2, 1, 0]`` for a NIfTI file's Fortran order."""
    axes = range(image.dim() - 1)
    return sorted(axes, key=lambda a: (image.shape[1 + a] > 1, image.stride(1 + a), -a), reverse=True)


def unnamed_mapped_array(shape: Sequence[int], folder: str, order: Sequence[int] | None = None) -> torch.Tensor:
    """A uint8 tensor ``shape`` ``(B, C, *S)`` in an unnamed temporary file of ``folder`` (created if missing; the
    system removes the file when the tensor is freed), whose spatial axes lie in memory in ``order`` (outermost
    first; C order by default)."""
    shape = tuple(int(n) for n in shape)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder) as unnamed:  # the mapping outlives the file object
        flat = torch.from_numpy(np.memmap(unnamed, dtype=np.uint8, mode="w+", shape=(math.prod(shape),)))
    dims = [0, 1, *[2 + a for a in (order if order is not None else range(len(shape) - 2))]]
    strides, step = [0] * len(shape), 1
    for dim in reversed(dims):
        strides[dim], step = step, step * shape[dim]
    return flat.as_strided(shape, strides)


def mapped_npy(path: str, shape: Sequence[int]) -> tuple[np.memmap, torch.Tensor]:
    """A uint8 ``.npy`` file of ``shape`` (C order), memory-mapped for writing: the numpy map (to flush) and a tensor
    view of it."""
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=tuple(int(n) for n in shape))
    return mapped, torch.from_numpy(mapped)


def release_rows(data: torch.Tensor, axis: int, done: tuple[int, int], upto: tuple[int, int]) -> tuple[int, int]:
    """Release (:func:`~unet_monai.memory.release_pages`) the memory-mapped pages of ``data`` ``(B, C, *S)`` from
    position ``done`` up to ``upto`` (``(batch, row)`` along spatial ``axis``, end excluded), where ``axis`` is the
    outermost in memory so that those rows are contiguous; returns the new position."""
    if upto <= done:
        return done
    for b in range(done[0], upto[0] + 1):
        image = data[b]
        if axes_outermost_first(image)[0] != axis:
            break
        lo = done[1] if b == done[0] else 0
        hi = upto[1] if b == upto[0] else image.shape[1 + axis]
        if hi > lo:
            release_pages(image.narrow(1 + axis, lo, hi - lo))
    return upto
