"""Whole-volume reductions in slabs along the outermost axis in memory: no full-size temporary, file order for a
memory-mapped volume, and the pages of each finished slab released."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from unet_monai.memory.pages import release_pages

__all__ = ["slabs", "streamed_mean_std"]

SLAB_VOXELS = 1 << 20  # voxels per slab of a streamed statistic (8 MB in float64)


def slabs(data: torch.Tensor, slab_voxels: int = 1 << 22) -> Iterator[torch.Tensor]:
    """Views of ``data`` in slabs of about ``slab_voxels`` voxels along its outermost axis in memory: a whole-volume
    reduction without a full-size temporary, reading a memory-mapped file in file order. Once the caller moves on
    to the next slab, the mapped pages of the one before leave the process's memory (:func:`release_pages`), so a
    pass over a mapped volume keeps one slab resident. A 0-d tensor is one slab."""
    if data.dim() == 0:
        yield data.reshape(1)
        return
    axis = max(range(data.dim()), key=lambda a: (data.stride(a), data.shape[a]))
    step = max(1, slab_voxels // max(1, data.numel() // max(1, data.shape[axis])))
    for start in range(0, data.shape[axis], step):
        slab = torch.as_tensor(data.narrow(axis, start, min(step, data.shape[axis] - start)))
        yield slab
        release_pages(slab)


def streamed_mean_std(image: torch.Tensor, slab_voxels: int = SLAB_VOXELS) -> tuple[float, float]:
    """Mean and population standard deviation of all voxels of ``image`` (any shape), in float64, read in slabs
    (:func:`slabs`) so that it is never copied whole. A standard deviation of 0 is returned as 1 (MONAI's
    ``NormalizeIntensity`` does the same)."""
    total, squares, count = 0.0, 0.0, 0
    shift = float("nan")  # a first estimate, subtracted for a stable variance
    for slab in slabs(image, slab_voxels):  # a memory-mapped image's pages leave memory slab by slab
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
