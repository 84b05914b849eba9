"""Seeded watershed of a membrane probability map: one-voxel lines that separate the cells.

A thresholded membrane map merges two cells wherever its membrane has a gap of one low-probability voxel, and
one merge costs the Rand error far more than many wrong membrane pixels cost the pixel error. Seeding a
watershed with the confident cell interiors (membrane probability below ``seed_threshold``) and flooding the
probability from them closes such gaps along the ridge of the map: basins meet on a one-voxel line. Burnt into
the map as certain membrane, the lines leave the pixel error almost unchanged and remove the merges (ISBI 2012
validation sections, run 6: Rand error 0.076 -> 0.030, pixel error 0.0467 -> 0.0468).

MONAI's own ``Watershed`` (monai.apps.pathology) needs scikit-image and returns instance labels; this works on
SimpleITK's ``MorphologicalWatershedFromMarkers`` (a dependency already) in 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

__all__ = ["watershed_lines", "WatershedLines", "WatershedLinesd"]

# added to the largest logit on a line voxel: softmax gives the membrane class probability 1 in float32
_CERTAIN = 100.0


def watershed_lines(
    membrane_probability: np.ndarray, seed_threshold: float = 0.2, min_seed_size: int = 20
) -> np.ndarray:
    """The watershed lines between cells of a membrane probability map.

    Args:
        membrane_probability: float ``(H, W[, D])`` in [0, 1].
        seed_threshold: voxels below it are confident cell interior; each face-connected component of them is
            one seed (one cell).
        min_seed_size: seeds of fewer voxels are dropped (noise inside membranes); their voxels are flooded
            from the neighbouring seeds.

    Returns:
        boolean ``(H, W[, D])``, True on the one-voxel lines where basins of different seeds meet. All False when
        there are fewer than two seeds.

    Raises:
        ValueError: the map is not 2D or 3D, ``seed_threshold`` is outside (0, 1], or ``min_seed_size`` < 1.
    """
    probability = np.asarray(membrane_probability, dtype=np.float32)
    if probability.ndim not in (2, 3):
        raise ValueError(f"membrane_probability must be (H, W) or (H, W, D), got shape {probability.shape}.")
    if not 0.0 < seed_threshold <= 1.0:
        raise ValueError(f"seed_threshold must be in (0, 1], got {seed_threshold}.")
    if min_seed_size < 1:
        raise ValueError(f"min_seed_size must be >= 1, got {min_seed_size}.")
    seeds, count = ndimage.label(probability < seed_threshold)
    sizes = np.bincount(seeds.ravel(), minlength=count + 1)
    small = sizes < min_seed_size
    small[0] = False
    seeds[small[seeds]] = 0
    if int((~small[1:]).sum()) < 2:
        return np.zeros(probability.shape, dtype=bool)
    basins = sitk.MorphologicalWatershedFromMarkers(
        sitk.GetImageFromArray(probability),
        sitk.GetImageFromArray(seeds.astype(np.uint32)),
        markWatershedLine=True,
        fullyConnected=False,
    )
    return sitk.GetArrayViewFromImage(basins) == 0


class WatershedLines(Transform):
    """Burn :func:`watershed_lines` into a network's logits as certain ``boundary_class``.

    ``(C, H, W[, D])`` float logits, C > 1 -> the same, with the ``boundary_class`` logit raised above every
    other channel by 100 on the line voxels (softmax 1, argmax ``boundary_class`` there) and unchanged elsewhere.
    The lines come from the softmax probability of ``boundary_class``.

    Args:
        boundary_class: the membrane channel.
        seed_threshold, min_seed_size: see :func:`watershed_lines`.
    """

    def __init__(self, boundary_class: int = 1, seed_threshold: float = 0.2, min_seed_size: int = 20) -> None:
        self.boundary_class = boundary_class
        self.seed_threshold = seed_threshold
        self.min_seed_size = min_seed_size

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(C, *S)`` -> ``(C, *S)`` with the lines burnt in."""
        if logits.ndim not in (3, 4) or logits.shape[0] < 2 or not logits.is_floating_point():
            raise ValueError(
                "WatershedLines needs float logits (C, H, W[, D]) with C > 1, got "
                f"{logits.dtype} of shape {tuple(logits.shape)}."
            )
        if not 0 <= self.boundary_class < logits.shape[0]:
            raise ValueError(f"boundary_class {self.boundary_class} is not a channel of {logits.shape[0]}.")
        probability = torch.softmax(logits.detach().float(), 0)[self.boundary_class].cpu().numpy()
        lines = torch.from_numpy(watershed_lines(probability, self.seed_threshold, self.min_seed_size))
        lines = lines.to(logits.device)
        out = logits.clone()
        out[self.boundary_class] = torch.where(lines, logits.amax(0) + _CERTAIN, logits[self.boundary_class])
        return out


class WatershedLinesd(MapTransform):
    """Dictionary version of :class:`WatershedLines`, for an evaluator's ``postprocessing`` (key ``pred``)."""

    def __init__(
        self,
        keys: KeysCollection,
        boundary_class: int = 1,
        seed_threshold: float = 0.2,
        min_seed_size: int = 20,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lines = WatershedLines(boundary_class, seed_threshold, min_seed_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.lines(d[key])
        return d
