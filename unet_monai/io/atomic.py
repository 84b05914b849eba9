"""Atomic file writes: a temporary file beside the target, renamed over it only when complete."""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "remove_stale_temporaries"]


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; on success it replaces ``target`` (``os.replace``, atomic on
    one file system), on failure it is removed. A crash mid-write never leaves a partial file under ``target``,
    and a failed write leaves an older ``target`` as it was. The file gets the permissions a plain ``open``
    would give it (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.

    Args:
        target: the final file.
        suffix: end of the temporary name; writers that pick the format from the name need the real one
            (``".tmp.nii.gz"``).

    Raises:
        OSError: the write failed (a full disk, ``ENOSPC``; a quota, ``EDQUOT``; a file size limit, ``EFBIG``; a
            read-only file system, ``EROFS``; no permission, ``EACCES``; a file where a folder should be,
            ``ENOTDIR``/``EEXIST``): the same ``errno``, with a message that names ``target``, the cause and what
            was left there.
        RuntimeError: the writer failed otherwise (``torch.save`` reports a full disk as ``RuntimeError``
            "unexpected pos"): the message names ``target`` and the free space; chained from the writer's error.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make every output private to its owner
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        message = f"cannot write {target}: {_cause(err, target)} ({_left(target)})"
        raise (OSError(err.errno, message) if err.errno else OSError(message)) from err
    except Exception as err:  # any writer's failure: name the file it was writing
        raise RuntimeError(f"cannot write {target}: {type(err).__name__}: {err} ({_left(target)})") from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)  # only still there when writing failed


def remove_stale_temporaries(target: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` leaves beside ``target`` when its process is killed
    mid-write (``.<target name>.<8 random characters><suffix>``, as ``mkstemp`` names them); returns them.

    Call it where nothing else is writing ``target`` (a run starting, before its first save): a write in progress
    by another process would lose its file.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = sorted(
        p
        for p in target.parent.glob(f".{glob.escape(target.name)}.*{glob.escape(suffix)}")
        if len(p.name) == len(target.name) + 10 + len(suffix) and p.is_file()
    )
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _cause(err: OSError, target: Path) -> str:
    """The cause of a failed write in words: the system's message, or for a file where a folder should be
    (``mkdir`` raises ``EEXIST``, ``open`` ``ENOTDIR``) which file blocks the path."""
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return err.strerror or str(err)


def _umask() -> int:
    """The process's umask (read by setting it, so briefly 0o022, never looser)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _left(target: Path) -> str:
    """What a failed write left under ``target``, and the free space there."""
    kept = "the older file was kept" if target.exists() else "nothing was written under that name"
    try:
        free = shutil.disk_usage(target.parent).free
    except OSError:
        return kept
    return f"{kept}; {free / 2**20:.0f} MiB free on that file system"
