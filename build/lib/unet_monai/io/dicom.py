"""DICOM series from a folder, as hospitals hand them over, as a MONAI ``ImageReader``.

Why our own: MONAI's ``PydicomReader`` orders slices by InstanceNumber and takes the slice spacing from
the z difference of ImagePositionPatient; its ``ITKReader`` takes the first series of a mixed folder with
only a warning (MONAI #5551). Here files are grouped by SeriesInstanceUID, one series is chosen by UID or
by rules (or an error lists what is there), slices are ordered by their position along the slice normal,
the spacing comes from the positions (not SliceThickness), and missing slices, uneven spacing, gantry
tilt and mixed orientations are detected. Files that are not DICOM images are ignored.

The array follows MONAI's DICOM convention ``(columns, rows, slices)`` with a RAS affine (LPS with
``affine_lps_to_ras=False``), so that ``LoadImage`` gives the same layout as for NIfTI files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

__all__ = ["DicomSeriesReader", "DicomSeries", "find_dicom_series"]

logger = logging.getLogger(__name__)

_SELECT = ("only", "most_slices")
# SOP classes whose Image Plane module (position, orientation) is mandatory: such a file without it is damaged
_PLANE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image Storage",
}
_SLICE_KEYS = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient")
_IRREGULAR = ("error", "resample")


@dataclass
class DicomSeries:
    """One series found in a folder: its identity and its image files (headers only, unsorted)."""

    uid: str
    modality: str = ""
    description: str = ""
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.uid} ({self.modality or '?'}, {self.description or 'no description'!r}, {len(self.files)} files)"


def find_dicom_series(folder: str | os.PathLike, recursive: bool = False) -> dict[str, DicomSeries]:
    """Group the DICOM image files of ``folder`` by SeriesInstanceUID; other files are skipped.

    A file counts as an image slice when pydicom reads it and it has SeriesInstanceUID, ImagePositionPatient
    and ImageOrientationPatient; SEG, RTSTRUCT, DICOMDIR and non-DICOM files (no ``DICM`` marker) are left out.
    A DICOM file whose header cannot be parsed, or a CT, MR or PET image without those fields (which the
    standard requires: a truncated file), raises ``ValueError`` naming it instead of silently dropping a slice.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM folder {root} does not exist or is not a folder.")
    paths = sorted(p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file())
    series: dict[str, DicomSeries] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError as err:  # no 'DICM' marker: not a DICOM file
            logger.debug("skipping %s: not a DICOM file (%s)", path, err)
            continue
        except Exception as err:  # pydicom raises many types on a damaged header
            raise ValueError(
                f"{path} is a DICOM file whose header cannot be read ({type(err).__name__}: {err}); "
                "repair it or move it out of the folder."
            ) from err
        missing = [k for k in _SLICE_KEYS if k not in ds]
        if missing:
            sop_class = _text(ds, "SOPClassUID", path) or _text(
                getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID", path
            )
            if sop_class in _PLANE_CLASSES:
                raise ValueError(
                    f"{path} is a {_PLANE_CLASSES[sop_class]} file without {', '.join(missing)}: it is truncated or "
                    "damaged; repair it or move it out of the folder."
                )
            logger.debug("skipping %s: not an image slice (no series UID or geometry)", path)
            continue
        uid = _text(ds, "SeriesInstanceUID", path)  # may be empty in anonymised data: one group
        entry = series.setdefault(
            uid, DicomSeries(uid, _text(ds, "Modality", path), _text(ds, "SeriesDescription", path))
        )
        entry.files.append(str(path))
    return series


class DicomSeriesReader(ImageReader):
    """Read one DICOM series from a folder into ``(columns, rows, slices)`` with a correct affine.

    Args:
        series_uid: read this SeriesInstanceUID.
        modality: keep only series of this Modality (``"CT"``, ``"MR"``, ...).
        description: keep only series whose SeriesDescription matches this regular expression.
        select: when several series remain, ``"only"`` raises an error that lists them, ``"most_slices"``
            takes the one with the most image files.
        on_irregular_spacing: ``"error"`` (default) for missing slices or uneven spacing, or ``"resample"``:
            linear interpolation along the slice axis onto a uniform grid at the median spacing.
        allow_gantry_tilt: keep a tilted series with its sheared affine (exact geometry in NIfTI's sform;
            resample before using it where an orthogonal grid is needed). By default tilt is an error.
        spacing_tolerance: relative deviation of a slice step from the median step that counts as uneven.
        affine_lps_to_ras: return a RAS affine (MONAI's default) instead of DICOM's LPS.
        recursive: also look in subfolders.
    """

    def __init__(
        self,
        series_uid: str | None = None,
        modality: str | None = None,
        description: str | None = None,
        select: str = "only",
        on_irregular_spacing: str = "error",
        allow_gantry_tilt: bool = False,
        spacing_tolerance: float = 0.01,
        affine_lps_to_ras: bool = True,
        recursive: bool = False,
    ) -> None:
        super().__init__()
        if select not in _SELECT:
            raise ValueError(f"select must be one of {_SELECT}, got {select!r}.")
        if on_irregular_spacing not in _IRREGULAR:
            raise ValueError(f"on_irregular_spacing must be one of {_IRREGULAR}, got {on_irregular_spacing!r}.")
        self.series_uid = series_uid
        self.modality = modality
        self.description = description
        self.select = select
        self.on_irregular_spacing = on_irregular_spacing
        self.allow_gantry_tilt = allow_gantry_tilt
        self.spacing_tolerance = spacing_tolerance
        self.affine_lps_to_ras = affine_lps_to_ras
        self.recursive = recursive

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """A folder is ours (DICOM series come as folders); single files are left to other readers.

        ``LoadImage`` hands over a tuple of paths; one folder in it is accepted."""
        if isinstance(filename, (list, tuple)):
            return len(filename) == 1 and Path(filename[0]).is_dir()
        return Path(str(filename)).is_dir()

    # ------------------------------------------------------------------ choosing the series
    def choose_series(self, folder: str | os.PathLike) -> DicomSeries:
        """The one series of ``folder`` that the settings select, or a ValueError that lists the series."""
        found = find_dicom_series(folder, self.recursive)
        if not found:
            raise ValueError(f"DICOM folder {folder} holds no DICOM image series.")
        candidates = list(found.values())
        if self.series_uid is not None:
            candidates = [s for s in candidates if s.uid == self.series_uid]
        if self.modality is not None:
            candidates = [s for s in candidates if s.modality.upper() == self.modality.upper()]
        if self.description is not None:
            candidates = [s for s in candidates if re.search(self.description, s.description)]
        listing = "; ".join(s.summary() for s in found.values())
        if not candidates:
            raise ValueError(
                f"DICOM folder {folder}: no series matches series_uid={self.series_uid!r}, "
                f"modality={self.modality!r}, description={self.description!r}. Series found: {listing}."
            )
        if len(candidates) > 1:
            if self.select == "most_slices":
                candidates.sort(key=lambda s: len(s.files), reverse=True)
                if len(candidates[0].files) > len(candidates[1].files):
                    return candidates[0]
            raise ValueError(
                f"DICOM folder {folder} holds {len(candidates)} matching series; choose one with series_uid, "
                f"modality or description (or select='most_slices'). Series: "
                + "; ".join(s.summary() for s in candidates)
                + "."
            )
        return candidates[0]

    # ------------------------------------------------------------------ ImageReader API
    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
        """Read the chosen series of folder ``data``: sorted slices, checked geometry."""
        if isinstance(data, (list, tuple)):
            if len(data) != 1:
                raise ValueError(f"DicomSeriesReader reads one folder at a time, got {len(data)} paths.")
            data = data[0]
        folder = str(data)
        series, datasets, files = self.sorted_slices(folder, stop_before_pixels=False)
        return self._assemble(folder, series, datasets, files)

    def sorted_slices(
        self, folder: str | os.PathLike, stop_before_pixels: bool = True
    ) -> tuple[DicomSeries, list, list]:
        """The chosen series of ``folder``: its pydicom datasets and files in slice order (ascending position
        along the slice normal), after checking that orientation and size agree and no position repeats."""
        folder = str(folder)
        series = self.choose_series(folder)
        datasets = [_read(f, stop_before_pixels) for f in series.files]
        for ds, path in zip(datasets, series.files):
            _check_header(ds, path)
        first = datasets[0]
        orientation = _numbers(first, "ImageOrientationPatient", 6, series.files[0])
        for ds, path in zip(datasets, series.files):
            if not np.allclose(_numbers(ds, "ImageOrientationPatient", 6, path), orientation, atol=1e-4):
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {path} has ImageOrientationPatient "
                    f"{list(ds.ImageOrientationPatient)}, others {orientation.tolist()}; mixed orientations."
                )
            if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {path} is {ds.Rows}x{ds.Columns}, "
                    f"others {first.Rows}x{first.Columns}."
                )
        along = np.array([_position(ds) @ _normal(ds) for ds in datasets])
        order = np.argsort(along, kind="stable")
        datasets = [datasets[i] for i in order]
        files = [series.files[i] for i in order]
        along = along[order]
        if len(datasets) > 1 and np.any(np.diff(along) < 1e-3):
            k = int(np.argmin(np.diff(along)))
            raise ValueError(
                f"DICOM series {series.uid} in {folder}: {files[k]} and {files[k + 1]} lie at the same position "
                f"along the slice normal ({along[k]:.3f} mm): duplicate slices or several acquisitions."
            )
        return series, datasets, files

    def get_data(self, img: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """``(columns, rows, slices)`` float32 array and its metadata (affine, spacing, series identity)."""
        return img["array"], img["meta"]

    # ------------------------------------------------------------------ geometry and pixels
    def _assemble(self, folder: str, series: DicomSeries, datasets: list, files: list) -> dict[str, Any]:
        first = datasets[0]
        orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
        row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (columns increase), along a column
        normal = _normal(first)
        positions = np.array([_position(ds) for ds in datasets])
        along = positions @ normal
        if len(datasets) > 1:
            step = float(np.median(np.diff(along)))
        else:
            step = _number(first, "SliceThickness", 1.0, files[0])
            if step <= 0:
                raise ValueError(f"{files[0]}: SliceThickness must be > 0 for a single-slice series, got {step}.")
        slice_vector = normal * step
        if len(datasets) > 1:
            direction = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0])
            tilt = float(np.degrees(np.arccos(np.clip(abs(direction @ normal), -1.0, 1.0))))
            if tilt > 0.1:
                if not self.allow_gantry_tilt:
                    raise ValueError(
                        f"DICOM series {series.uid} in {folder}: slices are offset at {tilt:.2f} degrees from their "
                        "normal (gantry tilt); pass allow_gantry_tilt=True to keep the sheared geometry."
                    )
                slice_vector = (positions[-1] - positions[0]) / (len(datasets) - 1)
        pixels = np.stack([self._pixels(ds, path) for ds, path in zip(datasets, files)], axis=-1)  # (rows, cols, n)

        steps = np.diff(along)
        if len(steps) and np.any(np.abs(steps - step) > self.spacing_tolerance * step):
            k = int(np.argmax(np.abs(steps - step)))
            gap = steps[k] / step
            what = (
                f"about {round(gap) - 1} missing slice(s)"
                if gap > 1.5 and abs(gap - round(gap)) < 0.1
                else "uneven spacing"
            )
            if self.on_irregular_spacing == "error":
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {what} between {files[k]} and {files[k + 1]} "
                    f"({steps[k]:.3f} mm apart, median step {step:.3f} mm); pass on_irregular_spacing='resample' "
                    "to interpolate onto a uniform grid."
                )
            logger.warning("DICOM series %s: %s; resampling to a uniform %.3f mm grid", series.uid, what, step)
            pixels, along = _resample_slices(pixels, along, step)

        row_spacing, col_spacing = (float(v) for v in _numbers(first, "PixelSpacing", 2, files[0]))  # row, column
        affine = np.eye(4)
        affine[:3, 0] = row_dir * col_spacing  # array axis 0: columns
        affine[:3, 1] = col_dir * row_spacing  # array axis 1: rows
        affine[:3, 2] = slice_vector
        affine[:3, 3] = positions[0]
        if self.affine_lps_to_ras:
            affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(
                f"DICOM series {series.uid} in {folder}: positions, orientation and spacing give no usable "
                f"affine (infinite or singular): {affine.tolist()}."
            )
        array = np.ascontiguousarray(np.swapaxes(pixels, 0, 1))  # (columns, rows, slices)
        meta = {
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS,
            "spacing": np.array([col_spacing, row_spacing, float(np.linalg.norm(slice_vector))]),
            "filename_or_obj": folder,
            "SeriesInstanceUID": series.uid,
            "StudyInstanceUID": str(first.get("StudyInstanceUID", "")),
            "Modality": series.modality,
            "SeriesDescription": series.description,
        }
        return {"array": array, "meta": meta}

    @staticmethod
    def _pixels(ds: Any, path: str) -> np.ndarray:
        """One slice in real-world values (RescaleSlope / RescaleIntercept applied), float32 ``(rows, cols)``."""
        try:
            values = ds.pixel_array
        except Exception as err:  # pydicom raises several types for missing decoders and corrupt data
            syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
            name = getattr(syntax, "name", str(syntax))
            raise RuntimeError(
                f"cannot decode the pixels of {path} (transfer syntax {syntax}, {name}): {err}. JPEG 2000 needs "
                "Pillow with OpenJPEG or pylibjpeg-openjpeg; JPEG-LS needs pylibjpeg-libjpeg or pyjpegls."
            ) from err
        if values.ndim != 2:
            raise ValueError(f"{path}: expected a single-frame 2D slice, got pixel array of shape {values.shape}.")
        slope, intercept = _number(ds, "RescaleSlope", 1.0, path), _number(ds, "RescaleIntercept", 0.0, path)
        with np.errstate(over="ignore", invalid="ignore"):
            pixels = (values.astype(np.float32) * np.float32(slope or 1.0) + np.float32(intercept)).astype(np.float32)
        if not np.all(np.isfinite(pixels)):
            raise ValueError(
                f"{path}: RescaleSlope {slope} and RescaleIntercept {intercept} give values beyond float32 range."
            )
        return pixels


def _read(path: str, stop_before_pixels: bool) -> Any:
    """One file's dataset, or a ValueError naming the file."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as err:  # pydicom raises many types on damaged files
        raise ValueError(f"{path}: cannot read this DICOM file ({type(err).__name__}: {err}).") from err


def _text(ds: Any, keyword: str, path: str | os.PathLike) -> str:
    """A header value as text ("" when absent), or a ValueError naming the file when pydicom cannot decode it."""
    try:
        return str(ds.get(keyword, "") or "")
    except Exception as err:  # values are decoded lazily, and a damaged one can raise anything
        raise ValueError(f"{path}: cannot decode {keyword} ({type(err).__name__}: {err}).") from err


def _numbers(ds: Any, keyword: str, count: int, path: str | os.PathLike) -> np.ndarray:
    """``count`` finite numbers from header field ``keyword``, or a ValueError naming the file and the field.

    A value that is not numbers is described, not shown: a damaged header can hold any bytes there."""
    try:
        value = ds.get(keyword)
    except Exception as err:  # values are decoded lazily, and a damaged one can raise anything
        raise ValueError(f"{path}: {keyword} must be {count} number(s), got a value pydicom cannot decode.") from err
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{path}: {keyword} must be {count} number(s), got none (the field is missing or empty).")
    values = list(value) if isinstance(value, (list, tuple, Sequence)) and not isinstance(value, str) else [value]
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(
            f"{path}: {keyword} must be {count} number(s), got {len(values)} value(s) that are not all numbers."
        ) from err
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise ValueError(f"{path}: {keyword} must be {count} finite number(s), got {numbers.tolist()}.")
    return numbers


def _number(ds: Any, keyword: str, default: float, path: str | os.PathLike) -> float:
    """An optional single number: ``default`` when the field is absent or empty."""
    try:
        value = ds.get(keyword)
    except Exception:  # undecodable: _numbers reports it
        value = ...
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return float(_numbers(ds, keyword, 1, path)[0])


def _check_header(ds: Any, path: str) -> None:
    """The fields the geometry needs, present and well formed; a ValueError that names the file otherwise."""
    for keyword in ("Rows", "Columns"):
        size = _numbers(ds, keyword, 1, path)[0]
        if size < 1 or size != int(size):
            raise ValueError(f"{path}: {keyword} must be a positive integer, got {size}.")
    orientation = _numbers(ds, "ImageOrientationPatient", 6, path)
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise ValueError(
            f"{path}: ImageOrientationPatient must be two orthogonal unit vectors, got {orientation.tolist()}."
        )
    _numbers(ds, "ImagePositionPatient", 3, path)
    spacing = _numbers(ds, "PixelSpacing", 2, path)
    if np.any(spacing <= 0):
        raise ValueError(f"{path}: PixelSpacing must be positive, got {spacing.tolist()}.")


def _normal(ds: Any) -> np.ndarray:
    """Unit normal of a slice: the cross product of its row and column directions."""
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    return np.cross(orientation[:3], orientation[3:])


def _position(ds: Any) -> np.ndarray:
    return np.asarray(ds.ImagePositionPatient, dtype=np.float64)


def _resample_slices(pixels: np.ndarray, along: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of ``pixels`` ``(rows, cols, n)`` at positions ``along`` onto a uniform grid."""
    count = int(round((along[-1] - along[0]) / step)) + 1
    if count > 2 * len(along):
        raise ValueError(
            f"resampling {len(along)} slices at a {step:.3f} mm step would give {count} slices: more than half of "
            "the series is missing, or a slice position is wrong."
        )
    target = along[0] + step * np.arange(count)
    upper = np.clip(np.searchsorted(along, target, side="right"), 1, len(along) - 1)
    lower = upper - 1
    t = ((target - along[lower]) / (along[upper] - along[lower])).astype(np.float32)
    resampled = pixels[..., lower] * (1 - t) + pixels[..., upper] * t
    return resampled.astype(np.float32), target
