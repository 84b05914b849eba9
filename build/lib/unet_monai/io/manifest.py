"""Datalists (``data_manifests/*.json``): MONAI / Decathlon style, loaded and checked before any training.

Format::

    {
      "name": "isbi2012",
      "data_root": "../../shared/data/isbi2012",   # optional; relative to this file's folder
      "labels": {"0": "cell", "1": "membrane"},
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

Errors: ``FileNotFoundError`` for a missing manifest or file, ``ValueError`` for everything else in it (not
JSON, not UTF-8, wrong types, ...), each naming the manifest.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

__all__ = ["load_manifest", "manifest_data_root", "manifest_labels", "inference_items"]

_LABELLED_SPLITS = ("training", "validation")
_PATH_KEYS = ("image", "label")
_UNSAFE_ID = re.compile(r"[\x00-\x1f\x7f/\\:]|^\.|^$")


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
            not a plain name.
    """
    path = Path(path)
    data = _read_json(path)
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
    """The manifest's ``labels`` as label value -> name (``{"1": "liver"}`` -> ``{1: "liver"}``)."""
    data = _read_json(Path(path))
    labels = data.get("labels", {})
    if not isinstance(labels, dict):
        raise ValueError(f"manifest {path}: 'labels' must map label values to names, got {labels!r}.")
    try:
        return {int(k): str(v) for k, v in labels.items()}
    except ValueError as err:
        raise ValueError(f"manifest {path}: 'labels' keys must be integer label values, got {list(labels)}.") from err


def inference_items(
    input: str | os.PathLike | list | None,
    manifest: str | os.PathLike | None,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict]:
    """What to segment, for ``inference.json``: ``input`` (an image file, a DICOM series folder, a list of
    them, or a datalist JSON), or else the ``split`` list of ``manifest`` (paths from ``data_root`` when
    given). Paths must exist unless ``check_files`` is False (skip-and-report runs find out per case)."""
    if input is None or input == "":
        if manifest is None:
            raise ValueError("give an input (file, DICOM folder, list or datalist) or a manifest.")
        return load_manifest(manifest, split, check_files=check_files, data_root=data_root)
    if isinstance(input, (str, os.PathLike)) and str(input).endswith(".json"):
        return load_manifest(input, split, check_files=check_files)
    paths = input if isinstance(input, (list, tuple)) else [input]
    items = []
    for i, path in enumerate(paths):
        if check_files and not os.path.exists(path):
            raise FileNotFoundError(f"input[{i}] {path} does not exist.")
        items.append({"image": str(Path(path).resolve())})
    return items
