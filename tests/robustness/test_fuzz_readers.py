"""Property-based tests (hypothesis) of the readers on mutated and generated files: only documented errors.

The contracts (also in SECURITY.md):

- NIfTI through ``StrictLoadImaged(reader="NibabelReader")`` -> ``EnsureChannelFirstd`` -> ``CheckImaged``:
  ``FileNotFoundError``, ``ValueError`` or ``RuntimeError``, each with the file's path in the message.
- ``DicomSeriesReader.read`` + ``get_data`` on a folder: ``ValueError`` (headers, geometry, series choice) or
  ``RuntimeError`` (pixel data that cannot be decoded), each naming the folder or one of its files; a series that
  loads has finite float32 voxels and a finite, invertible affine.
- ``load_manifest`` on any JSON (or bytes): ``FileNotFoundError`` or ``ValueError`` naming the manifest; what
  loads is a list of dicts with absolute image (and label) paths.

Any other exception type is a bug in our code. The runs are derandomised (the same cases in every run, in CI
too) and together try more than 1,000 cases.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.transforms import EnsureChannelFirstd

from unet_monai.io import DicomSeriesReader, StrictLoadImaged, load_manifest
from unet_monai.transforms import CheckImaged

NIFTI_CASES, DICOM_CASES, MANIFEST_CASES = 400, 250, 400  # 1,050 in all

FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_error(err: Exception, allowed: tuple[type[Exception], ...], *names: str) -> None:
    """``err`` is one of the documented types and its message names one of ``names``."""
    if not isinstance(err, allowed):
        raise AssertionError(f"undocumented {type(err).__name__}: {err}") from err
    if not any(name in str(err) for name in names):
        raise AssertionError(f"{type(err).__name__} does not name {names[0]}: {err}") from err


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, limit: int | None = None) -> bytes:
    """Overwrite bytes at ``edits`` (positions modulo ``limit`` or the length), then truncate at ``cut``."""
    out = bytearray(data)
    span = min(limit or len(out), len(out))
    for position, value in edits:
        out[position % span] = value
    return bytes(out[: cut % (len(out) + 1)] if cut is not None else out)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)
cuts = st.none() | st.integers(0, 10**6)


# ---------------------------------------------------------------- NIfTI


def nifti_bytes(shape: tuple[int, ...], dtype: str) -> bytes:
    array = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    image = nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0]))
    return image.to_bytes()  # uncompressed single file: 352-byte header + data


# NIfTI-1 header fields that decide shape, type, scaling and geometry: byte offsets of int16 and float32 fields
INT_FIELDS = [40 + 2 * i for i in range(8)] + [70, 72, 252, 254]  # dim[0..7], datatype, bitpix, qform/sform code
FLOAT_FIELDS = [76 + 4 * i for i in range(8)] + [108, 112, 116]  # pixdim, vox_offset, scl_slope, scl_inter
FLOAT_FIELDS += [256 + 4 * i for i in range(6)] + [280 + 4 * i for i in range(12)]  # quaternion, srow_x/y/z
INT_VALUES = st.sampled_from([0, 1, 2, -1, 3, 7, 8, 16, 64, 255, 256, 1024, 32767, -32768])
field_edits = st.lists(
    st.tuples(st.sampled_from(INT_FIELDS), st.just("<h"), INT_VALUES)
    | st.tuples(st.sampled_from(FLOAT_FIELDS), st.just("<f"), st.floats(width=32)),
    max_size=3,
)
NIFTI_BASES = [nifti_bytes((6, 5, 4), "float32"), nifti_bytes((6, 5, 4), "int16"), nifti_bytes((7, 3), "uint8")]


@st.composite
def nifti_cases(draw: st.DrawFn) -> tuple[str, bytes]:
    base = draw(st.sampled_from(NIFTI_BASES))
    header_only = draw(st.booleans())  # most damage worth finding is in the 348-byte header
    raw = bytearray(mutate(base, draw(edits), draw(cuts), 352 if header_only else None))
    for offset, fmt, value in draw(field_edits):
        if offset + struct.calcsize(fmt) <= len(raw):
            struct.pack_into(fmt, raw, offset, value)
    raw = bytes(raw)
    how = draw(st.sampled_from(["nii", "gzip of damaged nii", "damaged gzip"]))
    if how == "nii":
        return "case.nii", raw
    if how == "gzip of damaged nii":
        return "case.nii.gz", gzip.compress(raw, mtime=0)
    return "case.nii.gz", mutate(gzip.compress(base, mtime=0), draw(edits), draw(cuts))


def test_nifti_reader_raises_only_documented_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("nifti")
    chain = [
        StrictLoadImaged("image", reader="NibabelReader", image_only=True),
        EnsureChannelFirstd("image"),
        CheckImaged("image"),
    ]
    count = 0

    @settings(max_examples=NIFTI_CASES, **FUZZ)
    @given(nifti_cases())
    def run(case: tuple[str, bytes]) -> None:
        nonlocal count
        count += 1
        path = folder / case[0]
        path.write_bytes(case[1])
        data: dict = {"image": str(path)}
        try:
            for transform in chain:
                data = transform(data)
        except Exception as err:
            check_error(err, (FileNotFoundError, ValueError, RuntimeError), str(path))
            return
        assert data["image"].ndim >= 2 and bool(np.isfinite(np.asarray(data["image"].affine)).all())

    run()
    assert count >= NIFTI_CASES


# ---------------------------------------------------------------- DICOM

_TAG_VALUES = {
    "Rows": st.integers(-3, 70000),
    "Columns": st.integers(-3, 70000),
    "BitsAllocated": st.sampled_from([1, 8, 12, 16, 32, 64, 0]),
    "PixelRepresentation": st.integers(0, 3),
    "SamplesPerPixel": st.integers(0, 4),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "", "X"]),
    "ImagePositionPatient": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=4),
    "ImageOrientationPatient": st.lists(st.floats(-2, 2, width=32), max_size=7),
    "PixelSpacing": st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3),
    "RescaleSlope": st.floats(allow_nan=False, allow_infinity=False, width=32),
    "RescaleIntercept": st.floats(allow_nan=False, allow_infinity=False, width=32),
    "NumberOfFrames": st.integers(0, 3),
    "SeriesInstanceUID": st.sampled_from(["", "1.2.3", "1.2.840.1"]),
    "SliceThickness": st.floats(-1, 5, width=32),
}
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "1.2.3.4",
]


@st.composite
def dicom_damage(draw: st.DrawFn) -> tuple[str, Any]:
    """One damaged slice: tag values, the transfer syntax, the bytes, or a garbage file beside the series."""
    kind = draw(st.sampled_from(["tags", "syntax", "bytes", "garbage"]))
    if kind == "tags":
        keys = draw(st.lists(st.sampled_from(sorted(_TAG_VALUES)), min_size=1, max_size=3, unique=True))
        return kind, {k: draw(_TAG_VALUES[k]) for k in keys} | {"delete": draw(st.booleans())}
    if kind == "syntax":
        return kind, draw(st.sampled_from(TRANSFER_SYNTAXES))
    if kind == "bytes":
        return kind, (draw(edits), draw(cuts))
    preamble = draw(st.sampled_from([b"", b"\x00" * 128 + b"DICM"]))
    return kind, preamble + draw(st.binary(max_size=400))


def damage_series(files: list[Path], originals: list[bytes], which: int, kind: str, detail: Any) -> bool:
    """Apply one ``dicom_damage`` to slice ``which``; False when pydicom refuses to write the damaged slice."""
    if kind == "bytes":
        files[which].write_bytes(mutate(originals[which], *detail))
        return True
    if kind == "garbage":
        (files[0].parent / "extra.dcm").write_bytes(detail)
        return True
    ds = pydicom.dcmread(io.BytesIO(originals[which]))
    if kind == "syntax":
        ds.file_meta.TransferSyntaxUID = detail
    else:
        for key, value in detail.items():
            if key == "delete":
                continue
            if detail["delete"] and key in ds:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
    try:
        ds.save_as(files[which], enforce_file_format=False)
    except Exception:  # pydicom refuses to write some values: nothing for the reader to read
        return False
    return True


def test_dicom_reader_raises_only_documented_errors(
    tmp_path_factory: pytest.TempPathFactory, dicom_series: Callable[..., list[Path]]
) -> None:
    root = tmp_path_factory.mktemp("dicom")
    originals = [f.read_bytes() for f in dicom_series(root / "original", slices=3, rows=4, columns=5)]
    reader = DicomSeriesReader()
    count = 0

    @settings(max_examples=DICOM_CASES, **FUZZ)
    @given(dicom_damage(), st.integers(0, 2))
    def run(damage: tuple[str, Any], which: int) -> None:
        nonlocal count
        count += 1
        folder = root / f"case{count}"
        folder.mkdir()
        files = [folder / f"{i}.dcm" for i in range(3)]
        for file, data in zip(files, originals):
            file.write_bytes(data)
        try:
            if not damage_series(files, originals, which, *damage):
                return
            array, meta = reader.get_data(reader.read(str(folder)))
        except Exception as err:
            check_error(err, (ValueError, RuntimeError, FileNotFoundError), str(folder))
            return
        finally:
            shutil.rmtree(folder)
        assert array.dtype == np.float32 and np.isfinite(array).all()
        assert np.isfinite(meta["affine"]).all() and abs(np.linalg.det(meta["affine"][:3, :3])) > 0

    run()
    assert count >= DICOM_CASES


# ---------------------------------------------------------------- datalists

FILES = [f"{kind}{i}.nii.gz" for i in range(4) for kind in ("img", "lab")]  # in the manifest's folder and data/
names = st.sampled_from(FILES) | st.sampled_from(
    ["missing.nii.gz", "../img0.nii.gz", "/etc/passwd", "", ".", "sub/../img1.nii.gz", "a\x00b", "data/lab2.nii.gz"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | names,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
good_entries = st.builds(
    lambda i, case_id: {"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"} | case_id,
    st.integers(0, 3),
    st.sampled_from([{}, {"case_id": "c1"}, {"case_id": 3}]),
)
bad_entries = (
    st.fixed_dictionaries(
        {"image": names | st.lists(names, max_size=2) | json_values},
        optional={
            "label": names | st.lists(names, max_size=2) | json_values,
            "case_id": st.sampled_from(["../../x", "a/b", ".hidden", "", None, ["x"], "c\x00"]),
        },
    )
    | names
    | json_values
)


@st.composite
def manifest_files(draw: st.DrawFn) -> tuple[bytes, str, bool, str | None]:
    """A manifest (mostly well formed around ``split``, else any JSON or bytes), the split, check_files, data_root."""
    split = draw(st.sampled_from(["training", "validation", "test", "other"]))
    kind = draw(st.sampled_from(["good", "good", "damaged", "json", "bytes"]))
    if kind == "bytes":
        content = draw(st.binary(max_size=40))
    elif kind == "json":
        content = json.dumps(draw(json_values)).encode()
    else:
        entries = draw(st.lists(good_entries, min_size=1, max_size=3, unique_by=lambda e: e["image"]))
        if kind == "damaged":
            entries.insert(draw(st.integers(0, len(entries))), draw(bad_entries))
        if split == "test" and draw(st.booleans()):
            entries = [e["image"] if isinstance(e, dict) and "image" in e else e for e in entries]
        manifest: dict[str, Any] = {split: entries}
        if draw(st.booleans()):
            manifest["data_root"] = draw(st.sampled_from([".", "data", "missing", "", None, 3, ["x"]]))
        content = json.dumps(manifest).encode()
    return content, split, draw(st.booleans()), draw(st.sampled_from([None, None, "", "data", "missing"]))


def test_manifest_loader_raises_only_documented_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("manifest")
    (root / "data").mkdir()
    for name in FILES:
        (root / name).write_bytes(b"")
        (root / "data" / name).write_bytes(b"")
    path = root / "manifest.json"
    count = 0

    @settings(max_examples=MANIFEST_CASES, **FUZZ)
    @given(manifest_files())
    def run(case: tuple[bytes, str, bool, str | None]) -> None:
        nonlocal count
        count += 1
        content, split, check_files, data_root = case
        path.write_bytes(content)
        override = None if data_root is None else (str(root / data_root) if data_root else "")
        try:
            items = load_manifest(path, split, check_files=check_files, data_root=override)
        except Exception as err:
            check_error(err, (FileNotFoundError, ValueError), str(path))
            return
        assert isinstance(items, list) and items
        for item in items:
            for key in ("image", "label"):
                for file in item[key] if isinstance(item.get(key), list) else [item.get(key)]:
                    if file is not None:
                        assert os.path.isabs(file) and (os.path.exists(file) or not check_files)

    run()
    assert count >= MANIFEST_CASES
