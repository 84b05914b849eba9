"""Command-line overrides that name no config id are errors, not silent additions.

MONAI's ``python -m monai.bundle run`` adds any ``--key value`` it does not know as a new config item, so
``--epoch 1`` (for ``--epochs 1``) would train for the default number of epochs without a word. The bundle
calls :func:`check_overrides` first in ``initialize``.
"""

from __future__ import annotations

import ast
import difflib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["check_overrides", "refuse_together"]

# arguments of monai.bundle.scripts.run / create_workflow, not config ids
_RUN_ARGUMENTS = {
    "run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
    "workflow_name", "workflow_type", "properties_path",
}  # fmt: skip


def _config_files(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [str(f) for f in ast.literal_eval(value)]
    return [value]


def override_keys(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The config files and the override ids of a ``monai.bundle`` command line (``--key value`` or ``--key=value``)."""
    files: list[str] = []
    keys: list[str] = []
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        key, _, inline = token[2:].partition("=")
        if key == "config_file":
            files = _config_files(inline or (argv[i + 1] if i + 1 < len(argv) else ""))
        elif key not in _RUN_ARGUMENTS:
            keys.append(key)
    return files, keys


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Raise ValueError for a ``--key`` on the ``monai.bundle`` command line that is no id of its config files.

    Does nothing outside that command line (a ``ConfigWorkflow`` in Python passes its overrides as arguments).
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or "monai/bundle" not in str(argv[0]).replace("\\", "/"):
        return
    files, keys = override_keys(argv[1:])
    if not files or not keys:
        return
    parser = ConfigParser()
    parser.read_config(files)
    for key in keys:
        if key not in parser:
            ids = [k for k in parser.get().keys() if isinstance(k, str)]
            close = difflib.get_close_matches(key, ids, n=3)
            hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else "."
            raise ValueError(f"override --{key} names no config id in {', '.join(files)}{hint}")


def refuse_together(overlay: str, stages: Mapping[str, Sequence[Any]] | None = None, **switches: bool) -> None:
    """Raise ValueError when any of ``switches`` (config ids set to True) is on, or any of ``stages`` (config id ->
    its transforms) is not empty, together with ``overlay``, a config file that cannot honour them; the message
    names the overlay and the flags or stages to drop.

    Example: ``memory_mapped.json`` reduces each tile to labels as it comes and writes them on the input's grid, so
    ``--watershed True`` and ``--test_time_flips True`` (which need the float map of the whole image) and an
    orientation or spacing stage (which would need the volume resampled in RAM) are refused with it.
    """
    on = sorted(name for name, value in switches.items() if value)
    busy = sorted(name for name, transforms in (stages or {}).items() if transforms)
    if not on and not busy:
        return
    flags = " ".join(f"--{name} True" for name in on)
    parts = [flags] if flags else []
    if busy:
        parts.append("the " + " and ".join(busy) + " stage" + ("s" if len(busy) > 1 else "") + " of another overlay")
    what = " and ".join(parts)
    raise ValueError(
        f"{overlay} cannot be combined with {what}: it writes labels tile by tile on the input's own grid and never "
        f"holds the whole volume in RAM, which these need; drop {what}, or {overlay}."
    )
