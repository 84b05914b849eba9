"""Atomic file writes: a temporary file beside the target, renamed over it only when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target`` (``os.replace``, atomic on
    one file system), on failure it is removed. A crash mid-write never leaves a partial file under ``target``.

    Args:
        target: the final file.
        suffix: end of the temporary name; writers that pick the format from the name need the real one
            (``".tmp.nii.gz"``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only still there when writing failed
