"""Shared fixtures: seeded RNGs, a writer of small NIfTI files in ``tmp_path``, the bundle's 3D synthetic set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import create_test_image_2d


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same torch RNG state, so random inputs and weights are reproducible."""
    torch.manual_seed(0)


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    """Write a small 2D NIfTI image (or label, ``label=True``) at ``tmp_path / relpath``; returns the path."""

    def write(relpath: str, label: bool = False, size: int = 16, seed: int = 0) -> Path:
        image, seg = create_test_image_2d(
            size, size, num_objs=2, rad_max=5, rad_min=2, random_state=np.random.RandomState(seed)
        )
        array = seg.astype(np.uint8) if label else image.astype(np.float32)
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
        return path

    return write


@pytest.fixture(scope="session")
def synthetic_em_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's default 3D synthetic data set (``train_3d.json``), generated once per session and shared.

    Generating it takes about 25 s on 2 cores; the 3D bundle runs reuse it through ``--dataset_dir``, and the
    bundle's own ``make_synthetic_em`` call finds it complete (same arguments) and writes nothing.
    """
    from unet_monai.data import make_synthetic_em

    folder = tmp_path_factory.mktemp("shared_data") / "synthetic_em_3d"
    make_synthetic_em(folder, spatial_dims=3)
    return folder
