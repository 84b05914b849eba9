"""Datalists (``data_manifests/*.json``): MONAI / Decathlon style, loaded and checked before any training.

Format::

    {
      "name": "isbi2012",
      "data_root": "../../shared/data/isbi2012",   # optional; relative to this file's folder
      "labels": {"0": "cell", "1": "membrane"},
      "ignore_label": 255,                          # optional: the value of unlabelled voxels
      "training":   [{"image": "train/image/0.png", "label": "train/label/0.png", "case_id": "0"}, ...],
      "validation": [...],
      "test":       [{"image": "test/0.png"}, ...]
    }

Paths are relative to ``data_root`` (or to the manifest's folder when it is absent). MONAI's
``load_decathlon_datalist`` resolves them; we add the checks it leaves out (missing files, duplicates,
unpaired images and labels, the type of every path), each naming the entry at fault. ``image`` and ``label``
are a path or a list of paths (channels); ``case_id``, when present, is a plain name (no ``/``, ``\\``, ``:``
or leading ``.``, since reports and outputs may be named after it), kept as written (MONAI would turn it into a
path when a file of that name exists in ``data_root``).

Sparse annotation: the label value of unlabelled voxels is the top-level ``"ignore_label": 255`` or, as in
nnU-Net v2, a ``labels`` entry named ``"ignore"`` (``"labels": {"255": "ignore"}``; here as value -> name like the
other entries). Both may be given if they agree; a manifest where they disagree, with two ``"ignore"`` entries, or
whose ignore value is the value of a named class is refused (``manifest_ignore_label``, also run by
``load_manifest``).

Errors: ``FileNotFoundError`` for a missing manifest or file, ``ValueError`` for everything else in it (not
JSON, not UTF-8, wrong types, ...), each naming the manifest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

__all__ = [
    "check_label_values",
    "inference_items",
    "load_manifest",
    "manifest_label_values",
    "manifest_class_names",
    "manifest_data_root",
    "manifest_ignore_label",
    "manifest_labels",
]

_LABELLED_SPLITS = ("training", "validation")
_PATH_KEYS = ("image", "label")
_UNSAFE_ID = re.compile(r"[\x00-\x1f\x7f/\\:]|^\.|^$")
_IGNORE_NAME = "ignore"
_BACKGROUND_NAME = "background"


def manifest_data_root(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path:
    """The folder that the manifest's relative paths start from: ``data_root`` when given (a user's copy of
    the data), else the manifest's own ``data_root`` (relative to the manifest's folder), else that folder."""
    path = Path(path)
    if data_root is not None and str(data_root) != "":
        root_dir = Path(data_root).expanduser().resolve()
        if not root_dir.is_dir():
            raise FileNotFoundError(f"data_root {data_root} (for manifest {path}) is not a folder.")
        return root_dir
    data = _read_json(path)
    root = data.get("data_root")
    if root is not None and not (isinstance(root, str) and "\x00" not in root):
        raise ValueError(f"manifest {path}: 'data_root' must be a folder path (a string), got {root!r}.")
    return (path.parent / root).resolve() if root else path.parent.resolve()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist.")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"manifest {path} is not UTF-8 text: {err}.") from err
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"manifest {path} is not valid JSON: {err}.") from err
    if not isinstance(data, dict):
        raise ValueError(f"manifest {path} must hold a JSON object, got {type(data).__name__}.")
    return data


def _check_entry(path: Path, split: str, i: int, entry: Any) -> None:
    """One datalist entry: an ``image`` (and in labelled splits a ``label``) that are paths, a plain ``case_id``."""
    if isinstance(entry, str) and split == "test":
        entry = {"image": entry}  # Decathlon allows bare image paths in "test"
    if not isinstance(entry, dict) or "image" not in entry:
        raise ValueError(f"manifest {path}: {split}[{i}] must be a dict with an 'image' key, got {entry!r}.")
    if split in _LABELLED_SPLITS and "label" not in entry:
        raise ValueError(f"manifest {path}: {split}[{i}] ({entry['image']}) has no 'label'.")
    for key in _PATH_KEYS:
        if key not in entry:
            continue
        value = entry[key]
        files = value if isinstance(value, list) else [value]
        if not files or not all(isinstance(f, str) and f and "\x00" not in f for f in files):
            raise ValueError(
                f"manifest {path}: {split}[{i}] {key} must be a file path or a non-empty list of them, got {value!r}."
            )
    case_id = entry.get("case_id")
    if case_id is not None and (not isinstance(case_id, (str, int)) or _UNSAFE_ID.search(str(case_id))):
        raise ValueError(
            f"manifest {path}: {split}[{i}] case_id must be a plain name (no '/', '\\', ':', control characters "
            f"or leading '.'), got {case_id!r}."
        )


def load_manifest(
    path: str | os.PathLike,
    split: str = "training",
    check_files: bool = True,
    data_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Load one split of a manifest as a list of dicts with absolute paths, ready for a MONAI ``Dataset``.

    Args:
        path: the manifest JSON file.
        split: ``"training"``, ``"validation"``, ``"test"`` or any other list key of the manifest.
        check_files: raise if an image or label file is missing.
        data_root: where the relative paths start, overriding the manifest's own ``data_root``.

    Raises:
        FileNotFoundError: the manifest or a file it names is missing (the message names the entry).
        ValueError: the manifest is not a UTF-8 JSON object; the split is absent, empty, has duplicates; an
            entry is not a dict with path(s) under ``image`` (and ``label`` in a labelled split); a ``case_id`` is
            not a plain name; ``labels`` or the ignore value is malformed (see ``manifest_ignore_label``).
    """
    path = Path(path)
    data = _read_json(path)
    _ignore_label(path, data)  # refuses bad labels and mixed ignore conventions before anything is read
    entries = data.get(split)
    if not isinstance(entries, list) or not entries:
        lists = [k for k, v in data.items() if isinstance(v, list)]
        raise ValueError(f"manifest {path} must have a non-empty list {split!r}; its lists are {lists}.")
    if split == "test" and len({isinstance(e, str) for e in entries}) > 1:
        raise ValueError(f"manifest {path}: {split!r} must list only paths or only dicts, not both.")
    for i, entry in enumerate(entries):
        _check_entry(path, split, i, entry)
    base_dir = manifest_data_root(path, data_root)
    items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split, base_dir=base_dir)
    seen: dict[str, int] = {}
    for i, (item, entry) in enumerate(zip(items, entries)):
        if isinstance(entry, dict) and "case_id" in entry:  # MONAI makes it a path when a file has that name
            item["case_id"] = entry["case_id"]
        for key in _PATH_KEYS:
            for file in item[key] if isinstance(item.get(key), list) else [item.get(key)]:
                if file is None:
                    continue
                file = str(file)
                if check_files and not os.path.exists(file):
                    raise FileNotFoundError(f"manifest {path}: {split}[{i}] {key} {file} does not exist.")
                if file in seen:
                    raise ValueError(
                        f"manifest {path}: {split}[{i}] {key} {file} is listed twice (also entry {seen[file]})."
                    )
                seen[file] = i
    return items


def manifest_labels(path: str | os.PathLike) -> dict[int, str]:
    """The manifest's ``labels`` as label value -> name (``{"1": "liver"}`` -> ``{1: "liver"}``), all of them
    (background and an ``"ignore"`` entry included)."""
    return _labels(Path(path), _read_json(Path(path)))


def _labels(path: Path, data: dict) -> dict[int, str]:
    labels = data.get("labels", {})
    if not isinstance(labels, dict):
        raise ValueError(f"manifest {path}: 'labels' must map label values to names, got {labels!r}.")
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except ValueError as err:
        hint = ""
        if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
            example = ", ".join(f'"{v}": "{k}"' for k, v in list(labels.items())[:3])
            hint = f" (this is nnU-Net's name -> value form; write value -> name: {{{example}}})"
        raise ValueError(
            f"manifest {path}: 'labels' keys must be integer label values, got {list(labels)}{hint}."
        ) from err


def _ignore_label(path: Path, data: dict) -> int | None:
    labels = _labels(path, data)
    named = [value for value, name in labels.items() if name.strip().lower() == _IGNORE_NAME]
    if len(named) > 1:
        raise ValueError(f"manifest {path}: 'labels' must name at most one value 'ignore', got values {named}.")
    key = data.get("ignore_label")
    if key is None:
        return named[0] if named else None
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"manifest {path}: 'ignore_label' must be an integer label value, got {key!r}.")
    if named and named[0] != key:
        raise ValueError(
            f"manifest {path}: 'ignore_label' must agree with the 'labels' entry named 'ignore' (two ignore "
            f'conventions with different values), got ignore_label {key} and labels {{"{named[0]}": '
            f'"{labels[named[0]]}"}}.'
        )
    if key in labels and not named:
        raise ValueError(
            f"manifest {path}: 'ignore_label' must not be the value of a named class, got {key}, which 'labels' "
            f"names {labels[key]!r}."
        )
    return key


def manifest_ignore_label(path: str | os.PathLike) -> int | None:
    """The label value of unlabelled voxels: the manifest's ``ignore_label``, else the value of its ``labels``
    entry named ``"ignore"``, else None (every voxel is labelled).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ValueError: the two conventions disagree, ``labels`` names ``"ignore"`` twice, ``ignore_label`` is not an
            integer or is the value of a named class, or ``labels`` is malformed (each message names the file).
    """
    path = Path(path)
    return _ignore_label(path, _read_json(path))


def manifest_class_names(path: str | os.PathLike) -> dict[int, str]:
    """The classes to score: ``labels`` as value -> name without the background (the entry named
    ``"background"``, whatever its value) and the ignore value, e.g. ``{1: "spleen"}``; for
    ``unet_monai.metrics.case_scores`` and evaluation reports.

    Raises:
        FileNotFoundError, ValueError: as ``manifest_ignore_label``.
    """
    path = Path(path)
    data = _read_json(path)
    ignore = _ignore_label(path, data)
    return {
        value: name
        for value, name in _labels(path, data).items()
        if value != ignore and name.strip().lower() != _BACKGROUND_NAME
    }


def manifest_label_values(path: str | os.PathLike) -> list[int]:
    """Every label value a label map of this manifest may hold: its ``labels`` (background included) and its
    ignore value, sorted; for ``CheckPaird(label_values=...)``."""
    values = set(manifest_labels(path))
    ignore = manifest_ignore_label(path)
    if ignore is not None:
        values.add(ignore)
    return sorted(values)


def check_label_values(
    values: Iterable[float] | np.ndarray,
    manifest_labels: Mapping[int, str],
    source: str | os.PathLike,
    ignore_label: int | None = None,
) -> None:
    """Check that every value found in a label map is named in the datalist's ``labels`` (or is the ignore value).

    Args:
        values: the label map's values, or the label map itself (an array or tensor of any shape; integral floats
            count as integers).
        manifest_labels: the datalist's ``labels`` (``manifest_labels(manifest)``).
        source: the label file, named in the error.
        ignore_label: the datalist's ignore value (``manifest_ignore_label(manifest)``), or None.

    Raises:
        ValueError: some values are not named, listing them and the named ones.
    """
    known = {int(v) for v in manifest_labels} | ({int(ignore_label)} if ignore_label is not None else set())
    found = np.unique(np.asarray(values if hasattr(values, "__array__") else list(values))).astype(np.float64)
    unknown = [v for v in found.tolist() if not (float(v).is_integer() and int(v) in known)]
    if unknown:
        shown = [int(v) if float(v).is_integer() else v for v in unknown]
        named = sorted(known)
        raise ValueError(
            f"label {source} must hold only the label values the datalist names ({named}), got {shown} as well."
        )


def inference_items(
    input: str | os.PathLike | list | None,
    manifest: str | os.PathLike | None,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict]:
    """What to segment, for ``inference.json``: ``input`` (an image file, a DICOM series folder, a list of
    them, or a datalist JSON), or else the ``split`` list of ``manifest`` (paths from ``data_root`` when
    given). Paths must exist unless ``check_files`` is False (skip-and-report runs find out per case). A datalist's
    labels are left out: inference neither reads nor checks them (``evaluate.json`` scores against them)."""
    if input is None or input == "":
        if manifest is None:
            raise ValueError("give an input (file, DICOM folder, list or datalist) or a manifest.")
        return _without_labels(load_manifest(manifest, split, check_files=check_files, data_root=data_root))
    if isinstance(input, (str, os.PathLike)) and str(input).endswith(".json"):
        return _without_labels(load_manifest(input, split, check_files=check_files))
    paths = input if isinstance(input, (list, tuple)) else [input]
    items = []
    for i, path in enumerate(paths):
        if check_files and not os.path.exists(path):
            raise FileNotFoundError(f"input[{i}] {path} does not exist.")
        items.append({"image": str(Path(path).resolve())})
    return items


def _without_labels(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k != "label"} for item in items]
