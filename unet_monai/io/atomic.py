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
    one file system), on failure it is removed. A crash mid-write never leaves a partial file under ``target``,
    and a failed write leaves an older ``target`` as it was.

    Args:
        target: the final file.
        suffix: end of the temporary name; writers that pick the format from the name need the real one
            (``".tmp.nii.gz"``).

    Raises:
        OSError: the write failed (a full disk, ``ENOSPC``; a file size limit, ``EFBIG``; no permission): the
            same ``errno``, with a message that names ``target`` and says it was left unchanged.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        kept = "the older file was kept" if target.exists() else "nothing was written under that name"
        message = f"cannot write {target}: {err.strerror or err} ({kept})"
        raise (OSError(err.errno, message) if err.errno else OSError(message)) from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # only still there when writing failed
