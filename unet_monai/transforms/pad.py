"""Mirrored borders of any width, as the paper's overlap-tile figure shows them.

MONAI's ``BorderPadd(mode="reflect")`` goes through ``torch.nn.functional.pad``, which refuses a reflect pad that is
not smaller than the axis: a valid 3D network's context (20 voxels and more) is larger than a 5 mm CT's 26 slices.
This mirrors again and again (``numpy.pad(mode="reflect")`` semantics, the same values where both work), so a
volume smaller than the network's context along an axis is mirrored instead of refused.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple_rep

from unet_monai.inferers.tiling import mirror_pad

__all__ = ["MirrorPadd", "per_axis"]


def per_axis(value: int | Sequence[int], dims: int, name: str) -> list[int]:
    """One int for every spatial axis, or one per axis, as a list of ``dims`` ints (>= 0); ``name`` is for errors."""
    try:
        values = [int(v) for v in ensure_tuple_rep(value, dims)]
    except ValueError:
        values = []  # a sequence of the wrong length: reported below with the argument's name
    if len(values) != dims or any(v < 0 for v in values):
        raise ValueError(f"{name} must be >= 0, one value or one per spatial axis ({dims}), got {value}.")
    return values


class MirrorPadd(MapTransform):
    """Pad each key's ``(C, *S)`` array by ``spatial_border`` voxels on both sides of every spatial axis, mirrored
    (reflect, repeated where the pad is wider than the axis).

    With ``min_spatial_size`` (training: the input patch), an axis still shorter than that after the border is
    mirrored further, split evenly between its two sides, so a case smaller than the planned patch trains (nnU-Net
    pads such cases too) instead of being refused by the patch sampler.

    Args:
        keys: keys to pad (image, label and weight map alike: mirroring copies values, it never interpolates).
        spatial_border: voxels per side, one int for all axes or one per spatial axis (the network's ``context``).
        min_spatial_size: the smallest padded size per spatial axis (voxels), or None.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_border: int | Sequence[int],
        min_spatial_size: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_border = spatial_border
        self.min_spatial_size = None if min_spatial_size is None else [int(s) for s in min_spatial_size]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = d[key]
            dims = array.dim() - 1
            pads = per_axis(self.spatial_border, dims, "spatial_border")
            widths = [(p, p) for p in pads]
            if self.min_spatial_size is not None:
                if len(self.min_spatial_size) != dims:
                    raise ValueError(
                        f"min_spatial_size must have one size per spatial axis ({dims}), got {self.min_spatial_size}."
                    )
                for axis, (size, wanted) in enumerate(zip(array.shape[1:], self.min_spatial_size)):
                    short = wanted - (size + 2 * pads[axis])
                    if short > 0:
                        widths[axis] = (pads[axis] + short // 2, pads[axis] + short - short // 2)
            padded = mirror_pad(torch.as_tensor(array)[None], widths)[0]
            d[key] = MetaTensor(padded, meta=array.meta) if isinstance(array, MetaTensor) else padded
        return d
