"""Writers of small real NIfTI data sets: phantom volumes with known spacing and stored orientation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def write_case(
    folder: Path,
    name: str,
    ras_shape: Sequence[int],
    ras_spacing: Sequence[float],
    axcodes: str = "RAS",
    seed: int = 0,
    channels: int = 1,
) -> tuple[list[str], str]:
    """Write a phantom (a CT-like body with a bright box of label 1, and a ball of label 2) given in RAS voxel
    axes, stored in ``axcodes`` orientation (data permuted and flipped, affine to match). Returns the image
    file(s) (one per channel) and the label file, relative to ``folder``."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in ras_shape)
    label = np.zeros(shape, np.uint8)
    box = tuple(slice(s // 4, s // 4 + max(2, s // 3)) for s in shape)
    label[box] = 1
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    centre = np.array([3 * s // 4 for s in shape])[:, None, None, None]
    label[((grid - centre) ** 2).sum(0) <= 4] = 2
    affine = np.diag([*[float(s) for s in ras_spacing], 1.0])
    affine[:3, 3] = [-10.0, 20.0, -30.0]
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    files = []
    for c in range(channels):
        image = rng.normal(-800.0, 10.0, shape).astype(np.float32)  # air-like background
        image[label == 1] = 40.0 + 100.0 * c + rng.normal(0.0, 5.0, int((label == 1).sum()))
        image[label == 2] = 200.0 + 100.0 * c
        stored = nib.Nifti1Image(image, affine).as_reoriented(transform)
        files.append(f"{name}_{c:04d}.nii.gz")
        nib.save(stored, str(folder / files[-1]))
    nib.save(nib.Nifti1Image(label, affine).as_reoriented(transform), str(folder / f"{name}_seg.nii.gz"))
    return files, f"{name}_seg.nii.gz"


def write_datalist(
    folder: Path,
    cases: Sequence[dict],
    modality: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "phantoms",
) -> Path:
    """A datalist of ``write_case`` cases (each dict holds its keyword arguments) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    training = []
    for i, case in enumerate(cases):
        images, label = write_case(folder, f"case{i}", **case)
        training.append({"image": images if len(images) > 1 else images[0], "label": label, "case_id": f"case{i}"})
    datalist = {
        "name": name,
        "modality": modality or {"0": "CT"},
        "labels": labels or {"0": "background", "1": "box", "2": "ball"},
        "training": training,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path


# three cases at different spacings and stored orientations; in RAS axes (hand-checked in the tests):
# median spacing (0.8, 0.8, 5.0) mm, median shape (60, 60, 12); anisotropic, so the z target is the 10th
# percentile of (5, 4, 5) = 4.2 mm; shapes after resampling (60, 56, 14), (56, 60, 13), (56, 56, 14).
ANISO_CASES = [
    {"ras_shape": (60, 56, 12), "ras_spacing": (0.8, 0.8, 5.0), "axcodes": "LPS", "seed": 0},
    {"ras_shape": (56, 60, 14), "ras_spacing": (0.8, 0.8, 4.0), "axcodes": "RAS", "seed": 1},
    {"ras_shape": (64, 64, 12), "ras_spacing": (0.7, 0.7, 5.0), "axcodes": "PSR", "seed": 2},
]
