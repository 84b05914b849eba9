"""Helpers of the I/O tests (the ``dciodvfy`` fixture, run on every SEG the tests write, is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def assert_same_volume(image: object, reference: np.ndarray | None, reference_affine_lps: np.ndarray) -> None:
    """``image`` (a MetaTensor with a RAS affine) holds ``reference`` (array indexed like its LPS affine).

    For a single slice the slice spacing is not compared, only the slice direction. ``reference=None`` compares
    the geometry only.

    The two may order their axes differently (rows first, slices descending): the index map between them must be a
    signed axis permutation; directions and spacing agree to 1e-3 mm per voxel, the first voxel's position to
    0.01 mm, and the voxels (to float32 rounding of rescaled values) once the reference is reordered onto the image's
    axes.
    """
    ours = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)  # type: ignore[attr-defined]
    ref = np.asarray(reference_affine_lps, dtype=np.float64)
    if np.asarray(image).shape[2] == 1:  # one slice: no slice spacing to compare (readers take different fields)
        ours[:3, 2] *= np.linalg.norm(ref[:3, 2]) / np.linalg.norm(ours[:3, 2])
    index_map = np.linalg.inv(ref) @ ours  # our voxel index -> reference voxel index
    perm = np.round(index_map[:3, :3])
    assert sorted(np.abs(perm).sum(axis=0).tolist()) == [1.0, 1.0, 1.0], f"axes do not correspond: {index_map}"
    np.testing.assert_allclose(ours[:3, :3], ref[:3, :3] @ perm, atol=1e-3)
    offset = np.round(index_map[:3, 3])
    np.testing.assert_allclose(ours[:3, 3], (ref @ np.array([*offset, 1.0]))[:3], atol=1e-2)
    if reference is None:
        return
    axes = [int(np.argmax(np.abs(perm[:, a]))) for a in range(3)]
    reordered = np.transpose(np.asarray(reference), axes)
    for a in range(3):
        if perm[axes[a], a] < 0:
            reordered = np.flip(reordered, axis=a)
    values = np.asarray(image)
    assert values.shape == reordered.shape, f"shape {values.shape}, reference {reordered.shape}"
    np.testing.assert_allclose(values, reordered.astype(np.float64), rtol=1e-6, atol=0)  # float32 rescaling


@pytest.fixture(scope="session")
def same_volume() -> Callable[[object, np.ndarray | None, np.ndarray], None]:
    """:func:`assert_same_volume`: an image read by our reader against a reference reader's array and affine."""
    return assert_same_volume


def sitk_reference(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's voxels ``(x, y, z)`` and LPS affine of one file or of the series in a folder."""
    import SimpleITK as sitk

    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)), affine


@pytest.fixture(scope="session")
def sitk_volume() -> Callable[[str | Path], tuple[np.ndarray, np.ndarray]]:
    """:func:`sitk_reference`."""
    return sitk_reference
