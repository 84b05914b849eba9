"""Foreground-aware patch sampling, as nnU-Net's oversampling: a set fraction of patches is centred on a voxel of a
class drawn uniformly among the classes present in the case, the rest start uniformly.

The class locations are found once per case by :class:`ForegroundLocations` (deterministic, so MONAI's
``CacheDataset`` keeps them; the idea of MONAI's ``ClassesToIndicesd``), and each draw is then O(1).
:class:`ForegroundSampler` draws the patch start; :class:`~unet_monai.transforms.RandElasticGrid` takes it as
``center_sampler`` (and :class:`~unet_monai.transforms.RandElasticGridd` as ``label_key`` + ``pos_fraction``), so
the patch, the network's input size with its context, is cut and deformed as before, and the label crop (the
network's output size, ``crop_size``) is the patch's centre, around the chosen voxel.

Example (bundle config: the locations after ``MirrorPadd`` in ``train::deterministic_transforms``, the sampler
options on the patch transform in ``train::random_transforms``)::

    {"_target_": "unet_monai.transforms.ForegroundLocationsd", "keys": "label", "ignore_index": null},
    {"_target_": "unet_monai.transforms.RandElasticGridd", "keys": ["image", "label", "weight"],
     "spatial_size": "@patch_size", "crop_keys": ["label", "weight"],
     "crop_size": "$@network_def.output_shape(@patch_size)", "mode": ["bilinear", "nearest", "bilinear"],
     "label_key": "label", "pos_fraction": 0.33, "ignore_index": null}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform

__all__ = ["VoxelLocations", "ForegroundLocations", "ForegroundSampler", "voxel_locations"]


@dataclass
class VoxelLocations:
    """Flat (C-order) voxel indices of each class of one label map.

    Attributes:
        spatial_shape: the label's spatial shape, in voxels.
        classes: class value -> 1D int64 array of flat indices. Foreground classes (> 0, not ``ignore_index``);
            with an ``ignore_index``, also the background 0 (the labelled voxels a fallback centre is drawn from).
        ignore_index: the label value never used as a centre, or None.
    """

    spatial_shape: tuple[int, ...]
    classes: dict[int, np.ndarray] = field(default_factory=dict)
    ignore_index: int | None = None

    def foreground(self) -> list[int]:
        """The foreground classes present (> 0, at least one voxel), sorted."""
        return sorted(c for c, idx in self.classes.items() if c > 0 and idx.size)

    def labelled(self) -> list[int]:
        """Every stored class with at least one voxel (the background too when it is stored), sorted."""
        return sorted(c for c, idx in self.classes.items() if idx.size)


def voxel_locations(
    label: NdarrayOrTensor, ignore_index: int | None = None, max_per_class: int | None = None, seed: int = 1234
) -> VoxelLocations:
    """Locations of the classes of ``label`` ``(1, *spatial)`` or ``(*spatial)`` (see :class:`VoxelLocations`).

    ``max_per_class`` keeps at most that many voxels per class, drawn without replacement by
    ``np.random.RandomState(seed)`` (nnU-Net keeps 10000 per class): 8 bytes per kept voxel instead of per
    class voxel, at the price of centres drawn from a fixed subset.
    """
    data = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if data.ndim >= 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (1, 2, 3):
        raise ValueError(f"label must be (1, *spatial) with 1-3 spatial axes, got shape {tuple(np.shape(label))}.")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1 or None, got {max_per_class}.")
    flat = data.reshape(-1)
    if flat.dtype.kind == "f":
        if not np.all(np.isfinite(flat)) or np.any(flat != np.round(flat)):
            raise ValueError("label must hold integer class values, got non-integer values.")
    rs = np.random.RandomState(seed)
    classes: dict[int, np.ndarray] = {}
    # only the voxels that can be centres are sorted (foreground; background too with an ignore value), with a
    # stable sort, so each class is then a contiguous run in ascending flat order
    keep = np.flatnonzero(flat > 0) if ignore_index is None else np.flatnonzero((flat >= 0) & (flat != ignore_index))
    values = flat[keep]
    order = np.argsort(values, kind="stable")
    keep, values = keep[order], values[order]
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1]) if keep.size else np.zeros(0, int)
    bounds = starts.tolist() + [keep.size]
    for value, lo, hi in zip(values[starts].tolist(), bounds[:-1], bounds[1:]):
        indices = keep[lo:hi].astype(np.int64)
        if max_per_class is not None and indices.size > max_per_class:
            indices = np.sort(indices[rs.choice(indices.size, max_per_class, replace=False)])
        classes[int(value)] = indices
    return VoxelLocations(tuple(int(s) for s in data.shape), classes, ignore_index)


class ForegroundLocations(Transform):
    """Find the class locations of a label once (deterministic): ``(1, *spatial)`` -> :class:`VoxelLocations`.

    Put it after the last spatial transform before the patch sampler (after ``MirrorPadd``), so the indices
    address the array the sampler cuts.

    Args:
        ignore_index: a label value never used as a centre (e.g. 255); with it, the background's locations are
            kept too, for the fallback of :class:`ForegroundSampler`.
        max_per_class: see :func:`voxel_locations`.
        seed: see :func:`voxel_locations`.
    """

    def __init__(self, ignore_index: int | None = None, max_per_class: int | None = None, seed: int = 1234) -> None:
        self.ignore_index = ignore_index
        self.max_per_class = max_per_class
        self.seed = seed

    def __call__(self, label: NdarrayOrTensor) -> VoxelLocations:
        """``label`` ``(1, *spatial)`` -> its class locations."""
        return voxel_locations(label, self.ignore_index, self.max_per_class, self.seed)


class ForegroundSampler:
    """Draw the start of a patch: with probability ``pos_fraction`` centred on a foreground voxel (the class drawn
    uniformly among the classes present, then one of its voxels uniformly), otherwise uniform.

    With ``ignore_index``: ignored voxels are never centres (they are not in :class:`VoxelLocations`), and a uniform
    patch whose label crop holds no labelled voxel is redrawn, up to ``max_attempts`` times, then replaced by one
    centred on a labelled voxel (a class, background included, drawn uniformly, then a voxel).

    A patch centred on voxel ``c`` starts at ``c - patch_size // 2``, clamped into the volume; its label crop (the
    centre ``crop_size``, as :class:`RandElasticGrid` cuts it) then holds ``c`` at index ``crop_size // 2``. Where
    the clamp moves the patch, ``c`` stays in the label crop as long as the volume was padded by the network's
    context (the bundle's ``MirrorPadd``).

    Args:
        pos_fraction: fraction of patches centred on foreground, in ``[0, 1]`` (nnU-Net: 0.33).
        ignore_index: label value of unlabelled voxels, or None.
        max_attempts: uniform draws tried before the fallback (with ``ignore_index``).

    Attributes:
        last_class: the class the last patch was centred on, or None for a uniform patch.
        last_center: the voxel it was centred on (spatial index), or None.
    """

    def __init__(self, pos_fraction: float = 0.33, ignore_index: int | None = None, max_attempts: int = 10) -> None:
        if not 0.0 <= float(pos_fraction) <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}.")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}.")
        self.pos_fraction = float(pos_fraction)
        self.ignore_index = ignore_index
        self.max_attempts = int(max_attempts)
        self.last_class: int | None = None
        self.last_center: tuple[int, ...] | None = None

    @property
    def active(self) -> bool:
        """Whether the sampler draws anything beyond a uniform start (``pos_fraction > 0`` or an ignore value)."""
        return self.pos_fraction > 0 or self.ignore_index is not None

    def _centred(
        self, R: np.random.RandomState, locations: VoxelLocations, classes: list[int], patch: Sequence[int]
    ) -> tuple[int, ...]:
        value = classes[int(R.randint(len(classes)))]
        indices = locations.classes[value]
        center = tuple(
            int(i) for i in np.unravel_index(int(indices[int(R.randint(indices.size))]), locations.spatial_shape)
        )
        self.last_class, self.last_center = value, center
        return tuple(
            int(min(max(c - p // 2, 0), max(s - p, 0))) for c, p, s in zip(center, patch, locations.spatial_shape)
        )

    def __call__(
        self,
        R: np.random.RandomState,
        spatial_shape: Sequence[int],
        patch_size: Sequence[int],
        locations: VoxelLocations,
        crop_size: Sequence[int] | None = None,
        label: NdarrayOrTensor | None = None,
    ) -> tuple[int, ...]:
        """Start (voxels) of a ``patch_size`` patch in a volume of ``spatial_shape``, drawn with ``R``.

        ``locations`` must be those of this volume; ``label`` ``(1, *spatial)`` is read only for the ignore check,
        over the centre ``crop_size`` (default: the whole patch) of each uniform draw.
        """
        spatial = tuple(int(s) for s in spatial_shape)
        patch = tuple(int(p) for p in patch_size)
        if tuple(locations.spatial_shape) != spatial:
            raise ValueError(
                f"locations must be of the volume the patch is cut from, spatial shape {spatial}, got "
                f"{tuple(locations.spatial_shape)}; compute them (ForegroundLocationsd) after the last spatial "
                "transform before the sampler (after MirrorPadd)."
            )
        self.last_class = self.last_center = None
        if self.pos_fraction > 0 and R.random_sample() < self.pos_fraction:
            classes = locations.foreground()
            if classes:
                return self._centred(R, locations, classes, patch)
        ignore = self.ignore_index
        crop = tuple(int(c) for c in crop_size) if crop_size is not None else patch
        label_t = None
        if ignore is not None and label is not None:
            label_t = torch.as_tensor(label).as_subclass(torch.Tensor)
            label_t = label_t[0] if label_t.dim() == len(spatial) + 1 else label_t
        start: tuple[int, ...] = ()
        for _ in range(self.max_attempts if label_t is not None else 1):
            start = tuple(int(R.randint(0, max(s - p, 0) + 1)) for s, p in zip(spatial, patch))
            if label_t is None:
                return start
            region = tuple(slice(b + p // 2 - c // 2, b + p // 2 - c // 2 + c) for b, p, c in zip(start, patch, crop))
            if bool(torch.ne(label_t[region], int(ignore or 0)).any()):
                return start
        labelled = locations.labelled()
        if not labelled:
            warnings.warn(
                f"the label holds no labelled voxel (every voxel is ignore_index {ignore}); the patch is uniform.",
                RuntimeWarning,
                stacklevel=2,
            )
            return start
        return self._centred(R, locations, labelled, patch)


def _locations_or_compute(
    locations: Any, label: Any, ignore_index: int | None, what: str
) -> VoxelLocations:  # used by RandElasticGridd
    if isinstance(locations, VoxelLocations):
        if locations.ignore_index != ignore_index:
            raise ValueError(
                f"{what} must be computed with ignore_index {ignore_index} as the sampler, got "
                f"{locations.ignore_index}."
            )
        return locations
    if locations is not None:
        raise TypeError(f"{what} must be a VoxelLocations (ForegroundLocationsd), got {type(locations).__name__}.")
    return voxel_locations(label, ignore_index)
