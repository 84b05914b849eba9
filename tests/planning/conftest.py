"""Fixtures: the phantom data sets of :mod:`phantoms` written to ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from phantoms import ANISO_CASES, write_datalist


@pytest.fixture
def aniso_datalist(tmp_path: Path) -> Path:
    """The ``ANISO_CASES`` datalist (CT, classes background / box / ball) in ``tmp_path / "data"``."""
    return write_datalist(tmp_path / "data", ANISO_CASES)


@pytest.fixture
def datalist_writer(tmp_path: Path) -> Callable[..., Path]:
    """``write_datalist`` into a fresh folder under ``tmp_path`` per call."""
    count = [0]

    def write(cases: Sequence[dict], **kwargs: object) -> Path:
        count[0] += 1
        return write_datalist(tmp_path / f"data{count[0]}", cases, **kwargs)  # type: ignore[arg-type]

    return write
