"""Dictionary versions of the transforms: each calls its array twin once per key, with one shared random draw."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from unet_monai.transforms.check import GRAYSCALE_PIL_MODES, CheckImage, check_label, check_same_grid
from unet_monai.transforms.elastic import RandElasticGrid
from unet_monai.transforms.intensity import NormalizeByModality
from unet_monai.transforms.sampling import ForegroundLocations, ForegroundSampler, _locations_or_compute
from unet_monai.transforms.weight_map import BorderWeightMap

__all__ = [
    "RandElasticGridd",
    "BorderWeightMapd",
    "CheckImaged",
    "CheckPaird",
    "NormalizeByModalityd",
    "ForegroundLocationsd",
]


class RandElasticGridd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandElasticGrid`: image, label and weight map share one deformation.

    Args:
        keys: keys to deform.
        mode: resampling per key (one value or one per key): ``"bilinear"`` for images and weight maps,
            ``"nearest"`` for labels.
        crop_keys: keys returned as the centre ``crop_size`` of the patch only (labels and weight maps of a
            valid-padding network); their field is computed for that centre alone.
        crop_size: see ``crop_keys``.
        label_key: the label whose classes centre ``pos_fraction`` of the patches (see :class:`ForegroundSampler`);
            None (default): uniform patch starts, the random draws exactly as without these options.
        locations_key: where :class:`ForegroundLocationsd` stored the label's class locations (default
            ``f"{label_key}_locations"``). Consumed: the key is dropped from the output, so that batches collate.
            Absent: they are found from the label on every call (O(voxels) per patch instead of O(1)).
        pos_fraction: fraction of patches centred on a foreground voxel (nnU-Net: 0.33).
        ignore_index: label value of unlabelled voxels (e.g. 255): never a centre, and a patch whose label crop
            (``crop_size``, before deformation) holds no labelled voxel is redrawn up to ``max_attempts`` times.
        max_attempts: see ``ignore_index``.
        allow_missing_keys: skip keys that are absent.
        Other arguments: see :class:`RandElasticGrid`.
    """

    backend = RandElasticGrid.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        grid_size: Sequence[int] | int = 3,
        sigma: Sequence[float] | float = 10.0,
        units: str = "voxel",
        spatial_size: Sequence[int] | None = None,
        mode: Sequence[str] | str = "bilinear",
        padding_mode: str = "reflection",
        field_kernel: str = "cubic",
        crop_keys: KeysCollection = (),
        crop_size: Sequence[int] | None = None,
        label_key: str | None = None,
        locations_key: str | None = None,
        pos_fraction: float = 0.33,
        ignore_index: int | None = None,
        max_attempts: int = 10,
        rotate_range: Sequence[float] | float = 0.0,
        scale_range: Sequence[float] | float = 0.0,
        isotropic_scale: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)  # the probability lives in the array transform
        sampler = ForegroundSampler(pos_fraction, ignore_index, max_attempts) if label_key is not None else None
        self.label_key = label_key
        self.locations_key = locations_key or (f"{label_key}_locations" if label_key is not None else None)
        self.elastic = RandElasticGrid(
            prob,
            grid_size,
            sigma,
            units,
            spatial_size,
            "bilinear",
            padding_mode,
            field_kernel,
            sampler,
            rotate_range=rotate_range,
            scale_range=scale_range,
            isotropic_scale=isotropic_scale,
        )
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.crop_keys = set(ensure_tuple(crop_keys))
        if self.crop_keys and crop_size is None:
            raise ValueError(f"crop_size must be given with crop_keys {sorted(map(str, self.crop_keys))}.")
        self.crop_size = crop_size

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandElasticGridd:
        super().set_random_state(seed, state)
        self.elastic.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        spatial = tuple(d[first].shape[1:])
        sampler = self.elastic.center_sampler
        if sampler is None or self.label_key is None:
            self.elastic.randomize(spatial_shape=spatial)
        else:
            if self.label_key not in d:
                raise KeyError(f"label_key {self.label_key!r} must be in the data, got keys {sorted(map(str, d))}.")
            label = d[self.label_key]
            stored = d.pop(self.locations_key, None)
            locations = None
            if sampler.active:
                locations = _locations_or_compute(stored, label, sampler.ignore_index, str(self.locations_key))
            crop = self.crop_size if self.label_key in self.crop_keys else None
            self.elastic.randomize(spatial_shape=spatial, locations=locations, label=label, crop_size=crop)
        for key, mode in self.key_iterator(d, self.mode):
            crop = self.crop_size if key in self.crop_keys else None
            d[key] = self.elastic(d[key], mode=mode, randomize=False, crop_size=crop)
        return d


class BorderWeightMapd(MapTransform):
    """Dictionary version of :class:`BorderWeightMap`: writes the weight map of ``keys`` to ``output_keys``.

    Args:
        keys: label keys.
        output_keys: where to write each weight map (default: ``"weight"``).
        cells_keys: optional instance-label keys, one per label key.
        allow_missing_keys: skip keys that are absent.
        Other arguments: see :class:`BorderWeightMap`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection = "weight",
        cells_keys: KeysCollection | None = None,
        cell_labels: Sequence[int] | None = None,
        w0: float = 10.0,
        sigma: float = 5.0,
        units: str = "voxel",
        class_weights: Any = "balanced",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = ensure_tuple_rep(output_keys, len(self.keys))
        self.cells_keys = ensure_tuple_rep(cells_keys, len(self.keys))
        self.weight_map = BorderWeightMap(cell_labels, w0, sigma, units, class_weights)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, output_key, cells_key in self.key_iterator(d, self.output_keys, self.cells_keys):
            d[output_key] = self.weight_map(d[key], d[cells_key] if cells_key is not None else None)
        return d


class CheckImaged(MapTransform):
    """Dictionary version of :class:`CheckImage`: every key is checked, then all keys must lie on one grid
    (the spatial shape and affine of the first key, see :func:`check_same_grid`). Data pass through unchanged.

    Args:
        keys: keys to check (``["image", "label"]``).
        channels: expected channels, one value or one per key, e.g. ``"@in_channels"`` with co-registered
            sequences as channels. A case with another count is refused, naming its file and both counts.
        label_keys: keys that must have exactly 1 channel whatever ``channels`` says (label maps), so that one
            config, ``keys: ["image", "label"], channels: "@in_channels", label_keys: "label"``, serves training and
            (keys ``["image"]``) inference. Keys listed here but absent from ``keys`` are ignored.
        same_grid: require one spatial shape and affine over all keys.
        affine_tolerance: allowed affine difference, in voxels of the first key.
        allow_missing_keys: skip keys that are absent.
        Other arguments: see :class:`CheckImage`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int | None = None,
        channels: Sequence[int | None] | int | None = None,
        finite: bool = True,
        pil_modes: Sequence[str] | None = GRAYSCALE_PIL_MODES,
        same_grid: bool = True,
        affine_tolerance: float = 1e-3,
        label_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        labels = set(ensure_tuple(label_keys))
        per_key = ensure_tuple_rep(channels, len(self.keys))
        self.checks = [
            CheckImage(spatial_dims, 1 if key in labels else c, finite, pil_modes) for key, c in zip(self.keys, per_key)
        ]
        self.same_grid = same_grid
        self.affine_tolerance = affine_tolerance

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first: Hashable | None = None
        for key, check in self.key_iterator(d, self.checks):
            check(d[key], name=str(key))
            if first is None:
                first = key
            elif self.same_grid:
                check_same_grid(d[first], d[key], (str(first), str(key)), self.affine_tolerance)
        return d


class CheckPaird(MapTransform):
    """Check a label against its image with :func:`check_label`: exactly 1 channel, on the image's grid (spatial
    shape, affines within ``tolerance_mm`` mm), values among ``label_values``. Errors name both files. Data pass
    through unchanged.

    Args:
        keys: the label key(s).
        image_key: the image whose grid each label must lie on; None: no grid check.
        tolerance_mm: allowed distance between the two affines' positions of any voxel, in mm.
        label_values: allowed label values (e.g. ``[0, 1, 2, 255]``, the data list's labels and the ignore
            value); None: any.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        image_key: str | None = "image",
        tolerance_mm: float = 1e-4,
        label_values: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not tolerance_mm >= 0:
            raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}.")
        self.image_key = image_key
        self.tolerance_mm = tolerance_mm
        self.label_values = None if label_values is None else [int(v) for v in label_values]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.get(self.image_key) if self.image_key is not None else None
        if self.image_key is not None and image is None and not self.allow_missing_keys:
            raise KeyError(f"image_key {self.image_key!r} must be in the data, got keys {sorted(map(str, d))}.")
        for key in self.key_iterator(d):
            check_label(d[key], image, (str(self.image_key), str(key)), self.tolerance_mm, self.label_values)
        return d


class NormalizeByModalityd(MapTransform):
    """Dictionary version of :class:`NormalizeByModality`, one scheme per channel of each key.

    Args:
        keys: image keys.
        schemes: see :class:`NormalizeByModality`.
        mask_key: the mask (``!= 0``) over which ``"mr_mask"`` channels take their statistics, e.g. a body or
            foreground mask of the same grid; None when no scheme is ``"mr_mask"``.
        allow_missing_keys: skip keys that are absent.

    Example::

        NormalizeByModalityd(keys="image", schemes=[{"scheme": "ct", "clip": [-958, 327], "mean": 82.9,
            "std": 136.9}, {"scheme": "mr_nonzero"}])
    """

    backend = NormalizeByModality.backend

    def __init__(
        self,
        keys: KeysCollection,
        schemes: Sequence[Mapping[str, Any]],
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = NormalizeByModality(schemes)
        if mask_key is None and any(s["scheme"] == "mr_mask" for s in self.normalize.schemes):
            raise ValueError("mask_key must be given when a scheme is 'mr_mask'.")
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise KeyError(f"mask_key {self.mask_key!r} must be in the data, got keys {sorted(map(str, d))}.")
            mask = d[self.mask_key]
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], mask, name=str(key))
        return d


class ForegroundLocationsd(MapTransform):
    """Dictionary version of :class:`ForegroundLocations`: writes the class locations of each label key to
    ``f"{key}{output_postfix}"``, where :class:`RandElasticGridd` (``label_key``) reads them.

    Args:
        keys: label keys.
        output_postfix: suffix of the output key (``"label"`` -> ``"label_locations"``).
        allow_missing_keys: skip keys that are absent.
        Other arguments: see :class:`ForegroundLocations`.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        output_postfix: str = "_locations",
        ignore_index: int | None = None,
        max_per_class: int | None = None,
        seed: int = 1234,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_postfix = output_postfix
        self.locate = ForegroundLocations(ignore_index, max_per_class, seed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.output_postfix}"] = self.locate(d[key])
        return d
