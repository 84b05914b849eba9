"""Sparse annotation: keep a few orthogonal slices of a label, set every other voxel to the ignore value.

Cicek et al. (2016), the 3D U-Net paper, train on volumes in which an annotator labelled only a few orthogonal
slices; the unlabelled voxels get weight 0 in the loss. This makes such label maps from dense ones, for experiments
and tests (``k`` slices per axis), and from an annotator's own label files, in which the slices left unlabelled read
0 like the background (each datalist entry names its annotated slices): ``sparsify_label`` for one array,
``write_sparse_datalist`` for a whole datalist (NIfTI label files with the original affine and header, and a
datalist JSON with ``ignore_label`` set, which ``PixelWeightedCELoss`` and ``case_scores`` take as
``ignore_index``), also from the command line::

    python -m unet_monai.data.sparse --manifest dense.json --out_dir sparse/ --k 4
    python -m unet_monai.data.sparse --manifest annotated.json --out_dir sparse/   # entries name their slices
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from unet_monai.io.atomic import atomic_path
from unet_monai.io.manifest import load_manifest, manifest_ignore_label, manifest_labels

__all__ = [
    "annotated_positions",
    "slice_affine",
    "slice_positions",
    "sparsify_label",
    "unlabelled_ends",
    "write_slice_datalist",
    "write_sparse_datalist",
]

DEFAULT_IGNORE = 255
ANNOTATED_KEY = "annotated_slices"  # a datalist entry's own annotated slices: {"2": [40, 55, 70]} or {"2": "drawn"}


def _foreground_slices(label: np.ndarray, axis: int, ignore_index: int) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold any foreground (neither 0 nor ``ignore_index``)."""
    others = tuple(a for a in range(label.ndim) if a != axis)
    return np.flatnonzero(((label != 0) & (label != ignore_index)).any(axis=others))


def unlabelled_ends(sparse: np.ndarray, ignore_index: int = DEFAULT_IGNORE) -> dict[int, tuple[int, int]]:
    """Per axis of a sparse label ``(H, W[, D])``, the slices at its two ends that hold no labelled voxel (neither
    end run counted) where one of them is longer than every run between labelled slices: there a net trained on
    the label extrapolates further than it interpolates, and is shown no background (e.g. slices drawn only where
    the organ is, along one axis). Returns ``{axis: (unlabelled slices at the start, at the end)}``; empty when
    each axis is labelled near both ends (the paper's orthogonal slices: every slice of an axis crosses the
    others')."""
    ends = {}
    labelled = sparse != ignore_index
    for axis in range(sparse.ndim):
        others = tuple(a for a in range(sparse.ndim) if a != axis)
        held = np.flatnonzero(labelled.any(axis=others))
        if not held.size:
            continue
        start, end = int(held[0]), int(sparse.shape[axis] - 1 - held[-1])
        between = int(np.diff(held).max()) - 1 if held.size > 1 else 0
        if max(start, end) > max(between, 0):
            ends[axis] = (start, end)
    return ends


def _check_axes(axes: Sequence[int], ndim: int) -> list[int]:
    checked = [int(a) for a in axes]
    if not checked or len(set(checked)) != len(checked) or not all(0 <= a < ndim for a in checked):
        raise ValueError(f"axes must be distinct spatial axes of the {ndim}D label (0..{ndim - 1}), got {tuple(axes)}.")
    return checked


def slice_positions(
    label: np.ndarray,
    k: int,
    axes: Sequence[int] = (0, 1, 2),
    ignore_index: int = DEFAULT_IGNORE,
    seed: int | None = None,
) -> dict[int, list[int]]:
    """The slices to keep along each axis: ``k`` per axis within the foreground's extent along that axis.

    The foreground is every voxel that is neither 0 nor ``ignore_index``; its extent along an axis is the range
    ``[lo, hi]`` of slice indices that hold any of it (the whole axis when the label has no foreground).

    - ``seed`` None (default): evenly spaced, the centres of ``k`` equal parts of the extent,
      ``lo + floor((i + 0.5) * n / k)`` for ``i = 0..k-1`` and ``n = hi - lo + 1`` (``k = 1``: its middle slice).
    - ``seed`` an integer: ``k`` distinct slices of the extent drawn uniformly at random (reproducible).

    When the extent has fewer than ``k`` slices, all of them are kept.

    Args:
        label: integer label map ``(H, W[, D])`` (spatial axes only, no channel).
        k: slices per axis, >= 1.
        axes: the spatial axes to cut along (``(0, 1, 2)``: three orthogonal sets of slices).
        ignore_index: the ignore value, not counted as foreground.
        seed: random positions from this seed, or evenly spaced ones (None).

    Returns:
        axis -> sorted slice indices (voxels).

    Raises:
        ValueError: ``k`` < 1 or ``axes`` are not distinct axes of ``label``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (slices per axis), got {k!r}.")
    label = np.asarray(label)
    checked = _check_axes(axes, label.ndim)
    rng = np.random.default_rng(seed) if seed is not None else None
    positions: dict[int, list[int]] = {}
    for axis in checked:
        present = _foreground_slices(label, axis, ignore_index)
        lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, label.shape[axis] - 1)
        n = hi - lo + 1
        if k >= n:
            chosen = list(range(lo, hi + 1))
        elif rng is not None:
            chosen = sorted(int(lo + i) for i in rng.choice(n, size=k, replace=False))
        else:
            chosen = [lo + int(np.floor((i + 0.5) * n / k)) for i in range(k)]
        positions[axis] = chosen
    return positions


def annotated_positions(
    label: np.ndarray, annotated: Mapping[str | int, Sequence[int] | str], ignore_index: int = DEFAULT_IGNORE
) -> dict[int, list[int]]:
    """The slices an annotator labelled, as a datalist entry's ``annotated_slices`` names them.

    ``annotated`` maps an axis of the label file's array (``"0"``, ``"1"``, ``"2"``) to the indices of its labelled
    slices (voxels, from 0), or to ``"drawn"``: the slices along that axis holding any foreground (neither 0 nor
    ``ignore_index``). ``"drawn"`` cannot see a labelled slice without foreground, and along one axis only: slices
    drawn along another axis put foreground into every slice they cross.

    Args:
        label: integer label map ``(H, W[, D])``.
        annotated: axis -> slice indices or ``"drawn"``.
        ignore_index: the ignore value, not counted as foreground.

    Returns:
        axis -> sorted slice indices, for ``sparsify_label(positions=...)``.

    Raises:
        ValueError: ``annotated`` is empty or not a mapping, an axis is not one of the label's, ``"drawn"`` is used
            for several axes or finds no slice, or the indices are not a list of integers.
    """
    label = np.asarray(label)
    if not isinstance(annotated, Mapping) or not annotated:
        raise ValueError(
            f"{ANNOTATED_KEY} must map axes to slice indices or 'drawn', e.g. {{\"2\": [40, 55, 70]}}, "
            f"got {annotated!r}."
        )
    try:
        axes = _check_axes([int(axis) for axis in annotated], label.ndim)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{ANNOTATED_KEY} keys must be axes of the {label.ndim}D label: {err}") from err
    drawn = [axis for axis, value in zip(axes, annotated.values()) if value == "drawn"]
    if len(drawn) > 1:
        raise ValueError(
            f"{ANNOTATED_KEY} may say 'drawn' for one axis only (slices along another axis put foreground into every "
            f"slice they cross), got it for axes {drawn}; list the slice indices instead."
        )
    positions: dict[int, list[int]] = {}
    for axis, value in zip(axes, annotated.values()):
        if value == "drawn":
            found = _foreground_slices(label, axis, ignore_index)
            if not found.size:
                raise ValueError(f"{ANNOTATED_KEY}[{axis}] is 'drawn' but the label has no foreground voxel.")
            positions[axis] = [int(i) for i in found]
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in value)
        ):
            positions[axis] = sorted({int(i) for i in value})
        else:
            raise ValueError(
                f"{ANNOTATED_KEY}[{axis}] must be a non-empty list of slice indices or 'drawn', got {value!r}."
            )
    return positions


def sparsify_label(
    label: np.ndarray,
    k: int,
    axes: Sequence[int] = (0, 1, 2),
    ignore_index: int = DEFAULT_IGNORE,
    seed: int | None = None,
    positions: Mapping[int, Sequence[int]] | None = None,
) -> np.ndarray:
    """A sparse annotation of ``label``: the voxels of the kept slices as they are, every other voxel
    ``ignore_index``.

    A voxel is kept when it lies on a kept slice of any axis (the union of the orthogonal slices). The slices are
    ``positions`` when given, else :func:`slice_positions` (``k`` per axis, evenly spaced through the
    foreground's extent, or random with ``seed``).

    Args:
        label: integer label map ``(H, W[, D])``; it must not already hold ``ignore_index``.
        k: slices per axis (see :func:`slice_positions`); unused when ``positions`` is given.
        axes: the spatial axes to cut along.
        ignore_index: the value of the unlabelled voxels.
        seed: random slice positions from this seed; None for evenly spaced ones.
        positions: axis -> slice indices to keep, overriding ``k``, ``axes`` and ``seed``.

    Returns:
        the sparse label, same shape, in ``label``'s dtype or the smallest one that also holds ``ignore_index``
        (uint8 stays uint8 for 255; int8 becomes int16).

    Raises:
        ValueError: ``label`` already holds ``ignore_index``; a position is outside its axis; bad ``k`` or axes.
    """
    label = np.asarray(label)
    if np.any(label == ignore_index):
        raise ValueError(
            f"label must not hold the ignore value {ignore_index} already (a class with that value, or an "
            f"already sparse label), got {int(np.count_nonzero(label == ignore_index))} such voxels."
        )
    if positions is None:
        positions = slice_positions(label, k, axes, ignore_index, seed)
    _check_axes(list(positions), label.ndim)
    keep = np.zeros(label.shape, dtype=bool)
    for axis, indices in positions.items():
        indices = [int(i) for i in indices]
        if not all(0 <= i < label.shape[int(axis)] for i in indices):
            raise ValueError(
                f"positions[{axis}] must be slice indices in 0..{label.shape[int(axis)] - 1}, got {indices}."
            )
        index: list[slice | list[int]] = [slice(None)] * label.ndim
        index[int(axis)] = indices
        keep[tuple(index)] = True
    dtype = label.dtype if label.dtype.kind == "f" else np.promote_types(label.dtype, np.min_scalar_type(ignore_index))
    return np.where(keep, label.astype(dtype, copy=False), np.asarray(ignore_index, dtype=dtype))


def write_sparse_datalist(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int | None,
    axes: Sequence[int] = (0, 1, 2),
    ignore_index: int | None = None,
    seed: int | None = None,
    splits: Sequence[str] = ("training",),
    data_root: str | os.PathLike | None = None,
    name: str = "datalist.json",
) -> Path:
    """Sparsify every label of a datalist's ``splits`` and write a datalist that points at the sparse labels.

    Each label file (NIfTI) of those splits becomes ``out_dir/labels/<split>/<file name>`` (``sparsify_label``
    with ``k``, ``axes``, ``seed``; with ``k`` None, the slices the entry's own ``annotated_slices`` names, see
    :func:`annotated_positions`), written with the original affine and header. The new datalist
    ``out_dir/<name>`` keeps the source's ``labels``, ``modality`` and other top-level entries, sets
    ``ignore_label``, lists the images by absolute path and the sparse labels relative to ``out_dir``, copies the
    other splits (e.g. ``validation`` with its dense labels, for scoring) with absolute paths, and records under
    ``"sparse"`` the source datalist, ``k``, the axes, the seed and the kept slices of each label
    (``annotated_slices``: label path -> axis -> slice indices).

    Args:
        manifest_path: the dense datalist.
        out_dir: where the labels and the datalist go (created).
        k, axes, seed: see :func:`sparsify_label`; ``k`` None: every entry of ``splits`` names its annotated slices
            (``"annotated_slices": {"2": [40, 55, 70]}``), and ``axes`` and ``seed`` are not used.
        ignore_index: the ignore value; None: the datalist's own (``manifest_ignore_label``), else 255.
        splits: the labelled splits to sparsify.
        data_root: where the source datalist's paths start, overriding its ``data_root``.
        name: the file name of the new datalist.

    Returns:
        the path of the new datalist.

    Raises:
        FileNotFoundError: the datalist or a file it names is missing.
        ValueError: the ignore value differs from the datalist's own or is one of its named classes; a label is not
            a single NIfTI file; with ``k`` None, an entry without ``annotated_slices`` or with slices its label does
            not have; with ``k``, an entry with ``annotated_slices``; as ``load_manifest``, ``sparsify_label`` and
            ``annotated_positions`` (each naming the entry).
    """
    manifest_path = Path(manifest_path)
    own = manifest_ignore_label(manifest_path)
    if ignore_index is not None and own is not None and ignore_index != own:
        raise ValueError(
            f"ignore_index must be the datalist {manifest_path}'s own ignore value {own}, got {ignore_index}."
        )
    ignore = ignore_index if ignore_index is not None else own if own is not None else DEFAULT_IGNORE
    labels = manifest_labels(manifest_path)
    if ignore in labels and own is None:
        raise ValueError(
            f"ignore_index must not be a class of the datalist {manifest_path} ({ignore} is {labels[ignore]!r}), "
            f"got {ignore}; choose another value."
        )
    source = json.loads(manifest_path.read_text(encoding="utf-8"))
    out_dir = Path(out_dir)
    out: dict = {key: value for key, value in source.items() if not isinstance(value, list) and key != "data_root"}
    out["name"] = f"{source.get('name', manifest_path.stem)}_sparse" + (f"_k{k}" if k is not None else "")
    out["ignore_label"] = ignore
    lists = [key for key, value in source.items() if isinstance(value, list)]
    if not splits or not set(splits) <= set(lists):
        raise ValueError(f"splits must be lists of the datalist {manifest_path} ({lists}), got {list(splits)}.")
    annotated: dict[str, dict[str, list[int]]] = {}
    for split in lists:
        items = load_manifest(manifest_path, split, data_root=data_root)
        if split in splits:
            items = [
                _sparsify_item(
                    item,
                    f"{manifest_path}: {split}[{i}]",
                    Path("labels") / split,
                    out_dir,
                    k,
                    axes,
                    ignore,
                    seed,
                    annotated,
                )
                for i, item in enumerate(items)
            ]
        else:  # copied as they are, without annotation notes for the loaders
            items = [{key: value for key, value in item.items() if key != ANNOTATED_KEY} for item in items]
        out[split] = items
    out["sparse"] = {
        "source": str(manifest_path.resolve()),
        "k": k,
        "axes": [int(a) for a in axes] if k is not None else None,
        "seed": seed if k is not None else None,
        "annotated_slices": annotated,
    }
    path = out_dir / name
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return path


def _sparsify_item(
    item: dict,
    entry: str,
    folder: Path,
    out_dir: Path,
    k: int | None,
    axes: Sequence[int],
    ignore: int,
    seed: int | None,
    annotated: dict[str, dict[str, list[int]]],
) -> dict:
    """One datalist entry (named ``entry`` in errors) with its label replaced by a sparse copy under
    ``out_dir/folder`` (``k`` slices per axis, or with ``k`` None the entry's own ``annotated_slices``, which the
    written entry no longer carries); the new label path is relative to ``out_dir``, the datalist's folder."""
    source = item["label"]
    if k is not None and ANNOTATED_KEY in item:
        raise ValueError(
            f"{entry} names its annotated slices ({ANNOTATED_KEY!r}), so its label is not dense: give no k to keep "
            f"those slices, or drop the key to cut {k} slices per axis from a dense label."
        )
    if k is None and ANNOTATED_KEY not in item:
        raise ValueError(
            f"{entry} must name its annotated slices ({ANNOTATED_KEY!r}: axis -> slice indices, e.g. "
            f'{{"2": [40, 55, 70]}}, or "drawn") when no k is given; its keys are {sorted(item)}.'
        )
    if not isinstance(source, str) or not source.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{entry} label must be one NIfTI file (.nii, .nii.gz), got {source!r}.")
    image = nib.load(source)
    if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
        raise ValueError(f"{entry} label must be one NIfTI file (.nii, .nii.gz), got {source!r}.")
    dense = np.asanyarray(image.dataobj)
    try:
        if k is None:
            positions = annotated_positions(dense, item[ANNOTATED_KEY], ignore)
        else:
            positions = slice_positions(dense, k, axes, ignore, seed)
        sparse = sparsify_label(dense, 1, ignore_index=ignore, positions=positions)  # with positions, k is unused
    except ValueError as err:
        raise ValueError(f"{entry} label {source}: {err}") from err
    for axis, (start, end) in unlabelled_ends(sparse, ignore).items():
        size = sparse.shape[axis]
        runs = [f"{a}-{b}" for a, b in ((0, start - 1), (size - end, size - 1)) if b >= a]
        warnings.warn(
            f"{entry} label {source}: no labelled voxel in slices {' and '.join(runs)} along axis {axis} "
            f"({start + end} of {size}), more than between its labelled slices: a net trained on it sees no "
            "background there and may mark it. Label a slice there too (one without the structure counts: name it "
            f"in {ANNOTATED_KEY!r}) or slices along another axis.",
            RuntimeWarning,
            stacklevel=3,
        )
    relative = folder / Path(source).name
    if relative.as_posix() in annotated:  # two labels of one split with the same file name
        relative = folder / f"{len(annotated)}_{Path(source).name}"
    header = image.header.copy()
    header.set_data_dtype(sparse.dtype)
    header.set_slope_inter(None, None)  # values as they are (a scaled label was read as its scaled values)
    out = type(image)(sparse, image.affine, header)
    out.set_qform(image.get_qform(), int(image.header["qform_code"]))
    out.set_sform(image.get_sform(), int(image.header["sform_code"]))
    suffix = ".tmp.nii.gz" if relative.name.endswith(".gz") else ".tmp.nii"
    with atomic_path(out_dir / relative, suffix=suffix) as tmp:
        nib.save(out, str(tmp))
    annotated[relative.as_posix()] = {str(axis): indices for axis, indices in positions.items()}
    return {**{key: value for key, value in item.items() if key != ANNOTATED_KEY}, "label": relative.as_posix()}


def slice_affine(affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 4x4 affine of slice ``index`` along ``axis`` of a 3D grid with ``affine``, for the 2D array that keeps
    the other two axes in order: its columns are those axes' (mm per voxel), then the cut axis's; its origin is the
    slice's first voxel (mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    others = [a for a in range(3) if a != axis]
    out = np.eye(4)
    out[:3, :3] = affine[:3, [*others, axis]]
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * index
    return out


def write_slice_datalist(
    sparse_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "training",
    name: str = "datalist.json",
) -> Path:
    """The annotated slices of a sparse datalist as a 2D datalist: one 2D NIfTI image and label per kept slice.

    For the 2D baseline of the semi-automated experiment (a 2D U-Net trained on the annotated slices only, as in
    Cicek et al. 2016). ``sparse_manifest`` is a datalist written by :func:`write_sparse_datalist`; its
    ``sparse.annotated_slices`` record says which slices of each label were kept. Each such slice of each ``split``
    entry becomes ``out_dir/slices/<case>_a<axis>_<index>_{image,label}.nii.gz`` (the image's channel files cut
    the same way, one file per channel), with the in-plane spacing and position of the slice
    (:func:`slice_affine`). The new datalist keeps ``labels``, ``modality`` and ``ignore_label`` and lists every
    slice under ``training``, and records each slice's source under ``"slices"``.

    Args:
        sparse_manifest: the sparse 3D datalist.
        out_dir: where the slices and the datalist go (created).
        split: the split whose annotated slices are written.
        name: the file name of the new datalist.

    Returns:
        the path of the new datalist.

    Raises:
        ValueError: the datalist has no ``sparse.annotated_slices`` record, or an entry's label is not in it;
            an image is not a 3D NIfTI on the label's grid.
    """
    sparse_manifest = Path(sparse_manifest)
    source = json.loads(sparse_manifest.read_text(encoding="utf-8"))
    annotated = source.get("sparse", {}).get("annotated_slices")
    if not isinstance(annotated, dict):
        raise ValueError(
            f"{sparse_manifest} must be a sparse datalist written by write_sparse_datalist (with "
            "'sparse': {'annotated_slices': ...}), found none."
        )
    out_dir = Path(out_dir)
    (out_dir / "slices").mkdir(parents=True, exist_ok=True)
    items = load_manifest(sparse_manifest, split)
    raw = source[split]
    out: dict = {key: value for key, value in source.items() if not isinstance(value, list) and key != "sparse"}
    out["name"] = f"{source.get('name', sparse_manifest.stem)}_slices"
    training: list[dict] = []
    record: dict[str, dict] = {}
    for i, (item, entry) in enumerate(zip(items, raw)):
        positions = annotated.get(entry["label"])
        if positions is None:
            raise ValueError(f"{sparse_manifest}: {split}[{i}] label {entry['label']!r} is not in annotated_slices.")
        label = cast(nib.Nifti1Image, nib.load(item["label"]))
        label_data = np.asanyarray(label.dataobj)
        images = item["image"] if isinstance(item["image"], list) else [item["image"]]
        channels = []
        for path in images:
            image = cast(nib.Nifti1Image, nib.load(path))
            if image.shape[:3] != label.shape or len(image.shape) != 3:
                raise ValueError(
                    f"{sparse_manifest}: {split}[{i}] image {path} must be a 3D NIfTI of the label's shape "
                    f"{label.shape}, got {image.shape}."
                )
            channels.append(np.asanyarray(image.get_fdata(dtype=np.float32)))
        case = str(item.get("case_id", f"case{i}"))
        for axis_name, indices in positions.items():
            axis = int(axis_name)
            for index in indices:
                affine = slice_affine(label.affine, axis, index)
                stem = f"{case}_a{axis}_{index:04d}"
                files = []
                for c, data in enumerate(channels):
                    path = (
                        out_dir / "slices" / (f"{stem}_image.nii.gz" if len(channels) == 1 else f"{stem}_c{c}.nii.gz")
                    )
                    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
                        nib.save(nib.Nifti1Image(np.take(data, index, axis=axis), affine), str(tmp))
                    files.append(path.relative_to(out_dir).as_posix())
                label_path = out_dir / "slices" / f"{stem}_label.nii.gz"
                with atomic_path(label_path, suffix=".tmp.nii.gz") as tmp:
                    nib.save(nib.Nifti1Image(np.take(label_data, index, axis=axis), affine), str(tmp))
                training.append(
                    {
                        "image": files[0] if len(files) == 1 else files,
                        "label": label_path.relative_to(out_dir).as_posix(),
                        "case_id": stem,
                    }
                )
                record[stem] = {"source": item["label"], "axis": axis, "index": int(index)}
    out["training"] = training
    out["slices"] = record
    path = out_dir / name
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m unet_monai.data.sparse``: ``write_sparse_datalist`` from the command line."""
    parser = argparse.ArgumentParser(
        description="Write a sparse datalist: labels with only some slices annotated, every other voxel the ignore "
        "value.",
        prog="python -m unet_monai.data.sparse",
    )
    parser.add_argument("--manifest", required=True, help="the datalist JSON whose labels to sparsify")
    parser.add_argument("--out_dir", required=True, help="folder for the sparse labels and datalist.json")
    parser.add_argument("--k", type=int, default=None, help="keep k slices per axis of each dense label (default: "
                        f"each entry names its annotated slices, {ANNOTATED_KEY!r})")  # fmt: skip
    parser.add_argument("--axes", type=int, nargs="+", default=[0, 1, 2], help="with --k: the axes to cut along")
    parser.add_argument("--seed", type=int, default=None, help="with --k: random slices (default: evenly spaced)")
    parser.add_argument("--ignore_label", type=int, default=None, help="the ignore value (default: the datalist's "
                        f"own, else {DEFAULT_IGNORE})")  # fmt: skip
    parser.add_argument("--splits", nargs="+", default=["training"], help="the datalist lists to sparsify")
    parser.add_argument("--data_root", default=None, help="where the datalist's paths start (default: its own)")
    args = parser.parse_args(argv)
    path = write_sparse_datalist(
        args.manifest, args.out_dir, args.k, args.axes, args.ignore_label, args.seed, args.splits, args.data_root
    )
    written = json.loads(path.read_text(encoding="utf-8"))["sparse"]["annotated_slices"]
    for label, positions in written.items():
        kept = ", ".join(f"axis {axis}: {indices}" for axis, indices in positions.items())
        print(f"{label}: {kept}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
