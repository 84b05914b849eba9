"""Small fields of view in training, mirrored as inference mirrors them.

A valid network segments a scan by reading ``context`` voxels around every output voxel, mirrored past the scan's
border (the paper's overlap-tile strategy). On a whole abdomen that mirrored band is a thin rim; on a CT cropped
around one organ it is most of what the network sees: the MSD spleen crop resampled to 3 mm is 44 voxels per axis,
and a plan with 44 voxels of context per side reads an input tile that is 97 % mirror image. A network trained on
whole abdomens has never seen such input. :class:`RandFieldOfViewd` shows it to the network in training: it cuts a
box of random size (voxels) around a foreground voxel, or anywhere, out of the volume and mirrors it by the context,
exactly as ``MirrorPadd`` pads a whole case, so the patch sampler then draws from a small scan. Neither MONAI nor
nnU-Net has this augmentation (nnU-Net pads small cases with zeros and trains on whole volumes).

Example (bundle config: after ``MirrorPadd`` and ``ForegroundLocationsd``, before the patch sampler; see
``bundles/unet/small_fov.json``)::

    {"_target_": "unet_monai.transforms.RandFieldOfViewd", "keys": ["image", "label", "weight"],
     "min_size": 40, "max_size": 80, "spatial_border": "@context", "min_spatial_size": "@patch_size",
     "prob": 0.5, "label_key": "label", "ignore_index": null}
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from unet_monai.transforms.pad import MirrorPadd, per_axis
from unet_monai.transforms.sampling import VoxelLocations, voxel_locations

__all__ = ["RandFieldOfViewd"]


class RandFieldOfViewd(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace the case by a small field of view of itself, mirrored by the context.

    The input is the case as ``MirrorPadd(spatial_border)`` left it: each key ``(C, *S)`` with ``S = N + 2 *
    spatial_border`` (``N``: the case's own size, voxels). A box of ``size`` voxels per axis, drawn uniformly in
    ``[min_size, max_size]`` and at most ``N``, is placed inside the case's own voxels around a centre: with
    probability ``pos_fraction`` a foreground voxel (a class drawn uniformly among those present, then a voxel; from
    the locations ``ForegroundLocationsd`` stored), otherwise a uniform voxel. Every key is cut to that box and
    mirrored by ``spatial_border`` again (and to ``min_spatial_size``), and the label's class locations are found
    anew for the cut (``O(box voxels)``), so the patch sampler that follows draws from the small scan.

    Args:
        keys: keys to cut (image, label and weight map alike: cutting and mirroring copy values).
        min_size: smallest box, voxels, one value or one per spatial axis (>= 1).
        max_size: largest box, voxels, one value or one per spatial axis (>= ``min_size``).
        spatial_border: the mirrored border, voxels per side, as given to ``MirrorPadd`` (the network's ``context``).
        min_spatial_size: as ``MirrorPadd``'s (the input patch), or None.
        prob: probability of cutting a case; otherwise it passes unchanged.
        pos_fraction: fraction of boxes centred on a foreground voxel, in ``[0, 1]``.
        label_key: the label whose locations centre the boxes and are recomputed; None: uniform centres only.
        locations_key: where ``ForegroundLocationsd`` stored them (default ``f"{label_key}_locations"``); absent:
            found from the label.
        ignore_index: the label value of unlabelled voxels, as given to ``ForegroundLocationsd``, or None.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        min_size: int | Sequence[int],
        max_size: int | Sequence[int],
        spatial_border: int | Sequence[int],
        min_spatial_size: Sequence[int] | None = None,
        prob: float = 0.5,
        pos_fraction: float = 0.5,
        label_key: str | None = "label",
        locations_key: str | None = None,
        ignore_index: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not 0.0 <= float(pos_fraction) <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}.")
        self.min_size, self.max_size = min_size, max_size
        self.spatial_border = spatial_border
        self.pos_fraction = float(pos_fraction)
        self.label_key = label_key
        self.locations_key = locations_key or (f"{label_key}_locations" if label_key is not None else None)
        self.ignore_index = ignore_index
        self.pad = MirrorPadd(keys, spatial_border, min_spatial_size, allow_missing_keys)
        self.last_box: tuple[tuple[int, int], ...] | None = None  # (start, stop) per axis in the input, or None

    def _center(self, inner: list[tuple[int, int]], locations: VoxelLocations | None) -> list[int]:
        if locations is not None and self.R.random_sample() < self.pos_fraction:
            classes = locations.foreground()
            if classes:
                indices = locations.classes[classes[int(self.R.randint(len(classes)))]]
                for _ in range(20):  # the stored locations include the mirrored border: redraw until inside
                    flat = int(indices[int(self.R.randint(indices.size))])
                    center = [int(c) for c in np.unravel_index(flat, locations.spatial_shape)]
                    if all(lo <= c < hi for c, (lo, hi) in zip(center, inner)):
                        return center
        return [int(self.R.randint(lo, hi)) for lo, hi in inner]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.last_box = None
        self.randomize(None)
        if not self._do_transform:
            return d
        first = next(iter(self.key_iterator(d)), None)
        if first is None:
            return d
        spatial = [int(s) for s in d[first].shape[1:]]
        dims = len(spatial)
        border = per_axis(self.spatial_border, dims, "spatial_border")
        low = per_axis(self.min_size, dims, "min_size")
        high = per_axis(self.max_size, dims, "max_size")
        if any(lo < 1 or hi < lo for lo, hi in zip(low, high)):
            raise ValueError(f"need 1 <= min_size <= max_size per axis, got min_size {low}, max_size {high}.")
        inner = [(b, s - b) for b, s in zip(border, spatial)]
        if any(hi <= lo for lo, hi in inner):
            raise ValueError(
                f"{first!r} of spatial shape {tuple(spatial)} has no voxel inside a border of {border}: give "
                "RandFieldOfViewd the spatial_border of the MirrorPadd before it."
            )
        locations = None
        if self.label_key is not None and self.label_key in d:
            stored = d.get(self.locations_key) if self.locations_key is not None else None
            locations = (
                stored if isinstance(stored, VoxelLocations) else voxel_locations(d[self.label_key], self.ignore_index)
            )
        center = self._center(inner, locations)
        box = []
        for (lo, hi), c, small, large in zip(inner, center, low, high):
            size = min(int(self.R.randint(small, large + 1)), hi - lo)
            start = min(max(c - size // 2, lo), hi - size)
            box.append((start, start + size))
        self.last_box = tuple(box)
        region = (slice(None), *(slice(a, b) for a, b in box))
        for key in self.key_iterator(d):
            if [int(s) for s in d[key].shape[1:]] != spatial:
                raise ValueError(
                    f"every key must have the spatial shape of {first!r}, {tuple(spatial)}; {key!r} has "
                    f"{tuple(d[key].shape[1:])}."
                )
            d[key] = torch.as_tensor(d[key])[region].clone()  # no view into a cached case
        d = self.pad(d)
        if self.label_key is not None and self.label_key in d and self.locations_key is not None:
            d[self.locations_key] = voxel_locations(d[self.label_key], self.ignore_index)
        return d
