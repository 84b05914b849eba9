"""Dictionary versions of the transforms: each calls its array twin once per key, with one shared random draw."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from unet_monai.transforms.check import GRAYSCALE_PIL_MODES, CheckImage, check_same_grid
from unet_monai.transforms.elastic import RandElasticGrid
from unet_monai.transforms.weight_map import BorderWeightMap

__all__ = ["RandElasticGridd", "BorderWeightMapd", "CheckImaged"]


class RandElasticGridd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandElasticGrid`: image, label and weight map share one deformation.

    Args:
        keys: keys to deform.
        mode: resampling per key (one value or one per key): ``"bilinear"`` for images and weight maps,
            ``"nearest"`` for labels.
        crop_keys: keys returned as the centre ``crop_size`` of the patch only (labels and weight maps of a
            valid-padding network); their field is computed for that centre alone.
        crop_size: see ``crop_keys``.
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
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)  # the probability lives in the array transform
        self.elastic = RandElasticGrid(
            prob, grid_size, sigma, units, spatial_size, "bilinear", padding_mode, field_kernel
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
        self.elastic.randomize(spatial_shape=tuple(d[first].shape[1:]))
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
        channels: expected channels, one value or one per key.
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
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checks = [
            CheckImage(spatial_dims, c, finite, pil_modes) for c in ensure_tuple_rep(channels, len(self.keys))
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
