"""The embedded default data set: deterministic synthetic EM-like tissue, written as NIfTI with a datalist.

Cells are the Voronoi regions of random seed points; the label is the membrane between touching cells
(label 1) against the cell interior (label 0), as in the ISBI 2012 EM task. The image has per-cell
brightness, dark organelles inside cells that are *not* membrane, Gaussian blur and noise, so that a
network has to learn shape rather than a threshold. Works in 2D and 3D.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from unet_monai.io.atomic import atomic_path

__all__ = ["synthetic_em_volume", "make_synthetic_em"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def synthetic_em_volume(
    shape: Sequence[int],
    seed: int,
    cell_diameter: float = 24.0,
    membrane_width: float = 3.0,
    noise_std: float = 0.08,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic EM-like image and its membrane label.

    Args:
        shape: spatial shape ``(H, W[, D])`` in voxels.
        seed: seed of this volume's random generator; the same seed gives the same volume.
        cell_diameter: mean cell diameter in voxels.
        membrane_width: membrane thickness in voxels.
        noise_std: standard deviation of the additive Gaussian noise (the image lies roughly in [0, 1]).

    Returns:
        ``(image, label)``: float32 image and uint8 label (1 = membrane, 0 = cell) of shape ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise ValueError(f"shape must be 2D or 3D with every size >= 8 voxels, got {shape}.")
    rng = np.random.default_rng(seed)
    # seeds on a jittered grid: irregular cells of similar size, like tissue (uniform seeds make slivers)
    axes = [np.arange(cell_diameter / 2, s + cell_diameter / 2, cell_diameter) for s in shape]
    seeds = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shape))
    seeds = seeds + rng.uniform(-0.35, 0.35, size=seeds.shape) * cell_diameter
    num_cells = len(seeds)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    distances, nearest = cKDTree(seeds).query(grid.reshape(-1, len(shape)), k=2, workers=-1)
    # distance to the Voronoi boundary between the nearest and second-nearest seed (exact on the bisector)
    to_boundary = ((distances[:, 1] - distances[:, 0]) / 2.0).reshape(shape)
    cell = nearest[:, 0].reshape(shape)
    label = (to_boundary < membrane_width / 2.0).astype(np.uint8)

    brightness = rng.uniform(0.55, 0.9, size=num_cells)
    image = brightness[cell].astype(np.float32)
    image[label == 1] = 0.15
    # dark organelles: small blobs well inside cells, darker than cytoplasm but not part of the label
    num_blobs = num_cells * 2
    centres = rng.uniform(0, 1, size=(num_blobs, len(shape))) * np.array(shape)
    radii = rng.uniform(1.5, 3.5, size=num_blobs)
    blob_dist, blob_idx = cKDTree(centres).query(grid.reshape(-1, len(shape)), k=1, workers=-1)
    blobs = (blob_dist < radii[blob_idx]).reshape(shape) & (to_boundary > membrane_width + 2)
    image[blobs] = 0.35
    image = ndimage.gaussian_filter(image, sigma=1.0)
    image += rng.normal(0.0, noise_std, size=shape).astype(np.float32)
    return image.astype(np.float32), label


def _write_nifti(array: np.ndarray, path: Path) -> None:
    """Write ``array`` with an identity affine (1 mm voxels), atomically: temporary file, then rename."""
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp))


def make_synthetic_em(
    root: str | os.PathLike,
    spatial_dims: int = 2,
    num_training: int = 24,
    num_validation: int = 6,
    num_test: int = 2,
    shape: Sequence[int] | None = None,
    seed: int = 0,
) -> str:
    """Write the synthetic EM data set under ``root`` on first use and return its datalist path.

    The datalist (``root/datalist.json``, MONAI / Decathlon style, paths relative to ``root``) is written
    last, so an interrupted run leaves no datalist and the next call writes everything again. A datalist
    written with the same arguments is reused as it is.

    Args:
        root: folder for ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` and ``datalist.json``.
        spatial_dims: 2 (default 256x256 images) or 3 (default 96x96x64 volumes).
        num_training: cases in the ``training`` list.
        num_validation: cases in the ``validation`` list.
        num_test: unlabelled cases in the ``test`` list.
        shape: spatial shape in voxels; the default depends on ``spatial_dims``.
        seed: base seed; case ``i`` uses ``seed * 100_003 + i``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    shape = tuple(shape) if shape is not None else ((256, 256) if spatial_dims == 2 else (96, 96, 64))
    if len(shape) != spatial_dims:
        raise ValueError(f"shape must have {spatial_dims} sizes for spatial_dims={spatial_dims}, got {shape}.")
    root = Path(root)
    datalist_path = root / "datalist.json"
    generator = {
        "format": _FORMAT_VERSION,
        "spatial_dims": spatial_dims,
        "shape": list(shape),
        "num_training": num_training,
        "num_validation": num_validation,
        "num_test": num_test,
        "seed": seed,
    }
    if datalist_path.is_file():
        try:
            if json.loads(datalist_path.read_text()).get("generator") == generator:
                return str(datalist_path)
        except json.JSONDecodeError:
            pass
        logger.info("synthetic data set in %s was made with other settings; writing it again", root)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    lists: dict[str, list] = {"training": [], "validation": [], "test": []}
    counts = {"training": num_training, "validation": num_validation, "test": num_test}
    index = 0
    logger.info("writing the synthetic EM data set (%dD, %s voxels) to %s", spatial_dims, shape, root)
    for split, count in counts.items():
        for _ in range(count):
            image, label = synthetic_em_volume(shape, seed=seed * 100_003 + index)
            case = f"em_{index:03d}"
            if split == "test":
                _write_nifti(image, root / "imagesTs" / f"{case}.nii.gz")
                lists[split].append({"image": f"imagesTs/{case}.nii.gz", "case_id": case})
            else:
                _write_nifti(image, root / "imagesTr" / f"{case}.nii.gz")
                _write_nifti(label, root / "labelsTr" / f"{case}.nii.gz")
                lists[split].append(
                    {"image": f"imagesTr/{case}.nii.gz", "label": f"labelsTr/{case}.nii.gz", "case_id": case}
                )
            index += 1
    datalist = {
        "name": f"synthetic_em_{spatial_dims}d",
        "description": "Synthetic EM-like tissue: Voronoi cells, membrane label, organelles, blur and noise.",
        "tensorImageSize": f"{spatial_dims}D",
        "modality": {"0": "EM"},
        "labels": {"0": "cell", "1": "membrane"},
        "generator": generator,
        **lists,
    }
    with atomic_path(datalist_path) as tmp:
        tmp.write_text(json.dumps(datalist, indent=2))
    return str(datalist_path)
