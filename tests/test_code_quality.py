"""Lint and type checks as tests, so that CI (which runs pytest only) enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.integration
@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "ruff", "check", "."], [sys.executable, "-m", "mypy"]],
    ids=["ruff", "mypy"],
)
def test_tool_passes(command: list[str]) -> None:
    """ruff and mypy come with the ``test`` extra; run ``ruff check --fix .`` or read mypy's message to mend."""
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
