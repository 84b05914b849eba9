"""Output file names made from untrusted text (input file and folder names, datalist entries, DICOM tags), kept
inside their output folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["safe_filename", "contained_path"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]")  # control characters, both separators, ':' (Windows drives, NTFS streams)
_MAX_NAME = 200  # bytes stay under the usual 255-byte limit after a postfix and suffix are added


def safe_filename(name: str, default: str = "output") -> str:
    """``name`` as a single file name that cannot leave its folder.

    Path separators, ``:``, NUL and other control characters become ``_``; leading dots and spaces are dropped
    (so ``..`` and ``.hidden`` cannot appear); the result is cut to 200 characters; ``default`` is used when
    nothing is left.

    Example::

        safe_filename("../../etc/passwd") == "_.._etc_passwd"
    """
    cleaned = _UNSAFE.sub("_", str(name)).lstrip(". ")[:_MAX_NAME].rstrip(" ")
    return cleaned or default


def contained_path(output_dir: str | os.PathLike, name: str) -> Path:
    """``output_dir / name``, checked to lie inside ``output_dir`` once both are resolved (symbolic links
    followed).

    Args:
        output_dir: the output folder.
        name: a file name (pass untrusted text through :func:`safe_filename` first).

    Raises:
        ValueError: the path would leave ``output_dir`` (an absolute ``name``, ``..``, or a link out of it).
    """
    root = Path(output_dir).resolve()
    target = (root / name).resolve()
    if target == root or root not in target.parents:
        raise ValueError(f"output name {name!r} must stay inside the output folder {root}, got {target}.")
    return target
