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

from unet_monai.inferers.tiling import mirror_pad

__all__ = ["MirrorPadd"]


class MirrorPadd(MapTransform):
    """Pad each key's ``(C, *S)`` array by ``spatial_border`` voxels on both sides of every spatial axis, mirrored
    (reflect, repeated where the pad is wider than the axis).

    Args:
        keys: keys to pad (image, label and weight map alike: mirroring copies values, it never interpolates).
        spatial_border: voxels per side, one int for all axes or one per spatial axis (the network's ``context``).
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self, keys: KeysCollection, spatial_border: int | Sequence[int], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_border = spatial_border

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = d[key]
            dims = array.dim() - 1
            border = self.spatial_border
            pads = [int(border)] * dims if isinstance(border, int) else [int(b) for b in border]
            if len(pads) != dims or any(p < 0 for p in pads):
                raise ValueError(f"spatial_border must be >= 0, one value or one per axis ({dims}), got {border}.")
            padded = mirror_pad(torch.as_tensor(array)[None], [(p, p) for p in pads])[0]
            d[key] = MetaTensor(padded, meta=array.meta) if isinstance(array, MetaTensor) else padded
        return d
