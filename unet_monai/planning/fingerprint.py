"""The data-set fingerprint (nnU-Net v2's ``DatasetFingerprintExtractor``, for a MONAI datalist): per case the
voxel spacing and shape in the canonical RAS orientation, the stored orientation, the class voxel counts; per
input channel the foreground intensity statistics; and the data-set medians the planner starts from.

Differences from nnU-Net: no crop to the non-zero region before the shapes are taken (nnU-Net's
``shapes_after_crop``; for CT the crop is usually the whole image), and the labels are checked against the
datalist's ``labels`` (a value it does not name is an error, as in training).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.transforms import LoadImage
from tqdm import tqdm

from unet_monai.io.dicom import DicomSeriesReader
from unet_monai.io.manifest import (
    check_label_values,
    load_manifest,
    manifest_ignore_label,
    manifest_labels,
)
from unet_monai.transforms.check import check_same_grid, label_value_counts
from unet_monai.transforms.intensity import foreground_intensity_stats

__all__ = ["fingerprint_datalist", "ras_spacing_and_shape", "datalist_name"]

logger = logging.getLogger(__name__)


def datalist_name(manifest: str | os.PathLike) -> str:
    """The datalist's ``name`` (a plain name), else the manifest's file name without ``.json``."""
    path = Path(manifest)
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    if isinstance(name, str) and name and all(c.isalnum() or c in "-_." for c in name) and not name.startswith("."):
        return name
    return path.stem


def ras_spacing_and_shape(affine: Any, spatial_shape: Any) -> tuple[list[float], list[int], str]:
    """Voxel spacing (mm) and shape (voxels) along the axes of the RAS-reoriented grid, and the stored orientation.

    Reorienting to RAS (MONAI's ``Orientationd(axcodes="RAS")``) permutes and flips the voxel axes; this gives the
    spacing and shape that the reoriented volume will have, without resampling anything.

    Args:
        affine: the 4 x 4 voxel-to-world (RAS, mm) matrix, as MONAI's readers give it (``meta["affine"]``).
        spatial_shape: the stored spatial shape ``(X, Y, Z)`` (or 2 sizes), in voxels.

    Returns:
        ``(spacing, shape, axcodes)``: per RAS axis the spacing in mm (to 1e-6 mm) and size in voxels, and nibabel's
        ``aff2axcodes`` of the stored grid (e.g. ``"LPS"``).
    """
    matrix = np.asarray(affine, dtype=np.float64)
    shape = [int(s) for s in spatial_shape]
    dims = len(shape)
    if dims not in (2, 3):
        raise ValueError(f"spatial_shape must have 2 or 3 sizes, got {shape}.")
    if matrix.shape != (4, 4):
        raise ValueError(f"affine must be a 4 x 4 matrix, got shape {matrix.shape}.")
    if dims == 2:  # a 2D image lies in the first two world axes
        matrix = matrix.copy()
        matrix[:, 2] = 0.0
        matrix[2, 2] = 1.0
    spacing_stored = np.sqrt((matrix[:3, :dims] ** 2).sum(axis=0))
    ornt = nib.orientations.io_orientation(matrix[: dims + 1, : dims + 1] if dims == 2 else matrix)
    codes = "".join(nib.orientations.ornt2axcodes(ornt))
    spacing = [0.0] * dims
    size = [0] * dims
    for axis in range(dims):
        target = int(ornt[axis, 0])
        spacing[target] = round(float(spacing_stored[axis]), 6)  # 0.8 mm, not float32's 0.800000011920929
        size[target] = shape[axis]
    return spacing, size, codes


def _loader() -> LoadImage:
    return LoadImage(
        reader=[DicomSeriesReader(select="only"), "PILReader", "NibabelReader"],  # as inference.json
        image_only=True,
        ensure_channel_first=True,
    )


def fingerprint_datalist(
    manifest: str | os.PathLike,
    split: str = "training",
    data_root: str | os.PathLike | None = None,
    num_samples: int = 10000,
    seed: int = 1234,
    progress: bool = True,
    label_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fingerprint one split of a datalist: what :func:`unet_monai.planning.plan` decides from.

    Reads every case once (NIfTI with nibabel, PNG with Pillow, a DICOM series folder with
    :class:`unet_monai.io.DicomSeriesReader`, through MONAI's ``LoadImage``; a list of image paths is one case with
    one channel per path), with a tqdm progress bar.

    Args:
        manifest: the datalist JSON (``data_manifests/*.json`` format, with ``modality`` and ``labels``).
        split: the labelled list to read (``"training"``).
        data_root: where the datalist's relative paths start, overriding its own ``data_root``.
        num_samples: foreground voxels sampled per case and channel for the intensity statistics (nnU-Net: 10000).
        seed: seed of each case's sampler (nnU-Net: 1234).
        progress: show the progress bar.
        label_transform: applied to ``{"label": label}`` of each case before anything is counted or checked: the
            bundle's ``stages::labels`` (e.g. an overlay's ``MapLabelValued`` that keeps one class of a multi-class
            map), so that the plan sees the labels training will see.

    Returns:
        A JSON-serialisable dict: ``cases`` (per case ``case_id``, ``image``, ``spacing`` (mm) and ``shape``
        (voxels) along the RAS axes, ``orientation`` (stored axis codes), ``channels``, ``class_counts``
        {value: voxels}); ``spacings`` / ``shapes`` (the same, as lists); ``median_spacing`` (mm) and
        ``median_shape`` (voxels, RAS axes); ``spatial_dims``; ``in_channels``; ``foreground_intensity`` (one
        dict per channel: ``mean``, ``std``, ``median``, ``min``, ``max``, ``percentile_00_5``,
        ``percentile_99_5``, ``num_samples``); ``class_counts`` (data-set total per value); ``modality``
        (channel index -> name, from the datalist); ``labels`` (value -> name); ``ignore_label``; ``manifest``
        (absolute path), ``split``, ``data_root``, ``name``.

    Raises:
        FileNotFoundError: the datalist or one of its files is missing.
        ValueError: no datalist given; cases with different channel counts or dimensionality, a label off its
            image's grid (shape, or affine beyond 1e-3 voxel), a label value the datalist does not name, no
            foreground anywhere (each naming the file).
    """
    if manifest is None or str(manifest) == "":
        raise ValueError(f"manifest must be a datalist JSON file (--manifest M.json), got {manifest!r}.")
    manifest = Path(manifest).resolve()
    items = load_manifest(manifest, split, data_root=data_root)
    labels = manifest_labels(manifest)
    ignore = manifest_ignore_label(manifest)
    modality = json.loads(manifest.read_text(encoding="utf-8")).get("modality", {})
    if not isinstance(modality, dict):
        raise ValueError(f"manifest {manifest}: 'modality' must map channel indices to names, got {modality!r}.")
    loader = _loader()
    cases: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def images() -> Iterator[np.ndarray]:
        for i, item in enumerate(tqdm(items, desc="fingerprint", unit="case", disable=not progress)):
            image = loader(item["image"])
            label = loader(item["label"])
            if label_transform is not None:
                label = label_transform({"label": label})["label"]
            spatial = tuple(int(s) for s in image.shape[1:])
            if len(spatial) not in (2, 3):
                raise ValueError(
                    f"image {item['image']} must be 2D or 3D with channels first, got shape {tuple(image.shape)}."
                )
            if tuple(label.shape[1:]) != spatial or label.shape[0] != 1:
                raise ValueError(
                    f"label {item['label']} must have shape {(1, *spatial)} (one channel on the grid of image "
                    f"{item['image']}), got {tuple(label.shape)}."
                )
            check_same_grid(image, label)  # a label on another grid would give the wrong foreground intensities
            check_label_values(label_value_counts(label).keys(), labels, item["label"], ignore)
            spacing, shape, codes = ras_spacing_and_shape(image.meta["affine"], spatial)
            counts = label_value_counts(label)
            cases.append(
                {
                    "case_id": str(item.get("case_id", i)),
                    "image": item["image"],
                    "spacing": spacing,
                    "shape": shape,
                    "orientation": codes,
                    "channels": int(image.shape[0]),
                    "class_counts": {str(k): int(v) for k, v in counts.items()},
                }
            )
            current["label"] = np.asarray(label)
            yield np.asarray(image)

    def label_stream() -> Iterator[np.ndarray]:
        while "label" in current:  # foreground_intensity_stats takes one label right after each image
            yield current.pop("label")

    stats = foreground_intensity_stats(
        images(), label_stream(), num_samples=num_samples, seed=seed, ignore_index=ignore
    )
    dims = {len(c["shape"]) for c in cases}
    if len(dims) > 1:
        raise ValueError(f"manifest {manifest}: every case must have the same dimensionality, got {sorted(dims)}.")
    channels = {c["channels"] for c in cases}
    spacings = np.array([c["spacing"] for c in cases])
    shapes = np.array([c["shape"] for c in cases])
    totals: dict[str, int] = {}
    for case in cases:
        for value, count in case["class_counts"].items():
            totals[value] = totals.get(value, 0) + count
    fingerprint = {
        "name": datalist_name(manifest),
        "manifest": str(manifest),
        "split": split,
        "data_root": None if data_root is None else str(Path(data_root).resolve()),
        "spatial_dims": dims.pop(),
        "in_channels": channels.pop(),
        "modality": {str(k): str(v) for k, v in modality.items()},
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "ignore_label": ignore,
        "cases": cases,
        "spacings": spacings.tolist(),
        "shapes": shapes.tolist(),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape": np.median(shapes, axis=0).tolist(),
        "foreground_intensity": stats,
        "class_counts": dict(sorted(totals.items(), key=lambda kv: int(float(kv[0])))),
    }
    logger.info(
        "fingerprint of %s (%d cases): median spacing %s mm, median shape %s voxels (RAS axes)",
        manifest,
        len(cases),
        [round(s, 4) for s in fingerprint["median_spacing"]],
        fingerprint["median_shape"],
    )
    return fingerprint
