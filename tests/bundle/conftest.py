"""Bundle-run fixtures: a tiny trained 2D bundle, trained once per test run and copied into each test's root."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_unet_bundle import train_tiny


@pytest.fixture(scope="session")
def tiny_2d_bundle(made_once: Callable[[str, Callable[[Path], object]], Path]) -> Path:
    """A bundle root after a short run of the 2D bundle with a tiny network (``train_tiny``): its
    ``models/model.pt``, its training report in ``eval/``, its synthetic data set and the run's output in
    ``training.log``. Trained once per test run (``made_once``); tests read it and never write into it."""

    def train(root: Path) -> None:
        proc = train_tiny(root)
        (root / "training.log").write_text(proc.stdout + proc.stderr)

    return made_once("tiny_2d_bundle", train)


@pytest.fixture
def with_tiny_checkpoint(tiny_2d_bundle: Path, tmp_path: Path) -> Callable[[], Path]:
    """Copy the tiny bundle's checkpoint to ``tmp_path / "models" / "model.pt"`` (where the bundle's
    inference and export look by default); returns that path."""

    def copy() -> Path:
        target = tmp_path / "models" / "model.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_2d_bundle / "models" / "model.pt", target)
        return target

    return copy
