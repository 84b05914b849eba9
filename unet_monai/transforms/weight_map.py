"""The paper's weight map: class balancing plus a border term that makes thin separations between cells count.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

with d1 and d2 the distances to the nearest and second-nearest cell (Ronneberger et al. 2015, eq. 2;
w0 = 10, sigma = 5 pixels). No MONAI, TorchIO or nnU-Net transform computes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Transform
from scipy import ndimage

__all__ = ["BorderWeightMap", "border_weight_map"]


def _class_weights(label: np.ndarray, class_weights: str | Mapping[int, float] | None) -> np.ndarray:
    """w_c per voxel: "balanced" gives class k the weight N / (K * n_k) over the K classes present."""
    if class_weights is None:
        return np.ones(label.shape, dtype=np.float32)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"class_weights must be 'balanced', a mapping or None, got {class_weights!r}.")
        values, counts = np.unique(label, return_counts=True)
        table = dict(zip(values.tolist(), (label.size / (len(values) * counts)).tolist()))
    else:
        table = {int(k): float(v) for k, v in class_weights.items()}
        missing = set(np.unique(label).tolist()) - set(table)
        if missing:
            raise ValueError(f"class_weights has no weight for label values {sorted(missing)}.")
    lookup = np.vectorize(table.__getitem__, otypes=[np.float32])
    return lookup(label)


def _distance_to(cell: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxel centre to voxel centre, in ``spacing`` units) of every voxel to the nearest
    True voxel of ``cell``; 0 inside. In 3D, ITK's Maurer transform: 2.8x faster than scipy's EDT on a 96x96x64
    box (the whole weight map of a 3D synthetic volume: 0.9 -> 0.6 s). In 2D, scipy's: ITK's ~2 ms per call
    dominates the small boxes (the 121 cells of a 256x256 synthetic image: 0.20 s with ITK, 0.04 s with scipy)."""
    if cell.ndim == 2:
        return ndimage.distance_transform_edt(~cell, sampling=spacing)
    image = sitk.GetImageFromArray(cell.astype(np.uint8))  # ITK orders axes x, y, z: numpy's reversed
    image.SetSpacing([float(s) for s in spacing[::-1]])
    signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(signed), 0.0)


def border_weight_map(
    label: np.ndarray,
    cells: np.ndarray | None = None,
    cell_labels: Sequence[int] | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    spacing: Sequence[float] | None = None,
    class_weights: str | Mapping[int, float] | None = "balanced",
) -> np.ndarray:
    """The paper's weight map for one label image.

    Args:
        label: spatial ``(H, W[, D])`` class labels.
        cells: optional instance labels of the same shape (0 = no cell); when None, cells are the connected
            components of the voxels whose class is in ``cell_labels``.
        cell_labels: class values that are cells (default: every nonzero class).
        w0: border weight (10 in the paper).
        sigma: border width, in voxels or, with ``spacing``, in mm (5 pixels in the paper).
        spacing: voxel size per axis in mm, to measure distances and ``sigma`` in mm.
        class_weights: ``"balanced"`` (N / (K n_k)), a mapping class value -> weight, or None (all 1).

    Returns:
        float32 weights of ``label``'s shape. The border term is added on voxels outside every cell, from the
        distances (voxel centre to voxel centre) to the nearest and second-nearest cell.
    """
    label = np.asarray(label)
    if cells is None:
        mask = np.isin(label, cell_labels) if cell_labels is not None else label != 0
        cells, num_cells = ndimage.label(mask)
    else:
        cells = np.asarray(cells)
        if cells.shape != label.shape:
            raise ValueError(f"cells must have the label's shape {label.shape}, got {cells.shape}.")
        num_cells = int(cells.max())
    spacing_arr = np.ones(label.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    weight = _class_weights(label, class_weights)
    if w0 == 0 or num_cells < 2:
        return weight

    # beyond this distance from a cell the border term is below 1e-6 * w0: each cell's distance map is
    # computed in its bounding box grown by the margin, not over the whole image
    margin = sigma * math.sqrt(2 * math.log(1e6))
    grow = np.ceil(margin / spacing_arr).astype(int)
    d1 = np.full(label.shape, np.inf, dtype=np.float64)
    d2 = np.full(label.shape, np.inf, dtype=np.float64)
    for index, box in enumerate(ndimage.find_objects(cells), start=1):
        if box is None:
            continue
        region = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, label.shape))
        distance = _distance_to(cells[region] == index, spacing_arr)
        near, second = d1[region], d2[region]
        d2[region] = np.minimum(second, np.maximum(near, distance))
        d1[region] = np.minimum(near, distance)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    border[cells > 0] = 0.0
    return (weight + border).astype(np.float32)


class BorderWeightMap(Transform):
    """:func:`border_weight_map` as a MONAI transform: ``(1, H, W[, D])`` label -> ``(1, H, W[, D])`` float32.

    Deterministic: compute it once per label (before caching), then warp it with the image and label
    (linear resampling). Distances are in voxels, or in mm from the MetaTensor's spacing with ``units="mm"``.

    Args:
        cell_labels: class values that are cells (default: every nonzero class).
        w0: border weight. sigma: border width in ``units``.
        units: ``"voxel"`` or ``"mm"``.
        class_weights: see :func:`border_weight_map`.
    """

    def __init__(
        self,
        cell_labels: Sequence[int] | None = None,
        w0: float = 10.0,
        sigma: float = 5.0,
        units: str = "voxel",
        class_weights: str | Mapping[int, float] | None = "balanced",
    ) -> None:
        if units not in ("voxel", "mm"):
            raise ValueError(f"units must be 'voxel' or 'mm', got {units!r}.")
        if sigma <= 0 or w0 < 0:
            raise ValueError(f"sigma must be > 0 and w0 >= 0, got sigma={sigma}, w0={w0}.")
        self.cell_labels = cell_labels
        self.w0 = w0
        self.sigma = sigma
        self.units = units
        self.class_weights = class_weights

    def __call__(
        self, label: torch.Tensor | np.ndarray, cells: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """``label`` ``(1, *S)`` (and optional instance map ``cells`` ``(1, *S)``) -> weights ``(1, *S)``."""
        if label.ndim not in (3, 4) or label.shape[0] != 1:
            raise ValueError(f"label must be (1, H, W) or (1, H, W, D), got shape {tuple(label.shape)}.")
        spatial = label.ndim - 1
        spacing = None
        if self.units == "mm":
            spacing = label.pixdim[:spatial].tolist() if isinstance(label, MetaTensor) else [1.0] * spatial
        label_np = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label)[0]
        cells_np = None
        if cells is not None:
            cells_np = np.asarray(cells.detach().cpu() if isinstance(cells, torch.Tensor) else cells)[0]
        weight = border_weight_map(
            label_np, cells_np, self.cell_labels, self.w0, self.sigma, spacing, self.class_weights
        )
        out = torch.from_numpy(weight)[None]
        return MetaTensor(out, meta=label.meta) if isinstance(label, MetaTensor) else out
