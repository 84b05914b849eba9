"""DICOM series from a folder or one file, as scanners and hospitals hand them over, as a MONAI ``ImageReader``.

Why our own: MONAI's ``PydicomReader`` orders slices by InstanceNumber and takes the slice spacing from
the z difference of ImagePositionPatient; its ``ITKReader`` takes the first series of a mixed folder with
only a warning (MONAI #5551). Here files are grouped by SeriesInstanceUID, one series is chosen by UID or
by rules (or an error lists what is there), each file is turned into frames with their own geometry (classic
slices, enhanced multi-frame, Siemens MOSAIC, RT Dose: :mod:`unet_monai.io.dicom_frames`), acquisitions sharing
positions are split and one is chosen, frames are ordered by their position along the slice normal, the spacing
comes from the positions (not SliceThickness), and missing slices, uneven spacing, gantry tilt and mixed
orientations are detected. Files that are not DICOM images are ignored in a folder and refused as a single input.

The array follows MONAI's DICOM convention ``(columns, rows, slices)`` with a RAS affine (LPS with
``affine_lps_to_ras=False``), so that ``LoadImage`` gives the same layout as for NIfTI files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from unet_monai.io.dicom_frames import ACQUISITION_KEYS, choose_acquisition

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
_NOT_IMAGES = {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "ECG"}


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
    """Group the DICOM image files of ``folder`` (or the one file ``folder``) by SeriesInstanceUID.

    A file counts as an image when pydicom reads it, it has Rows, and it has plane geometry: SeriesInstanceUID
    with ImagePositionPatient and ImageOrientationPatient, or functional groups (enhanced multi-frame). SEG,
    RTSTRUCT, SR, DICOMDIR, images without plane geometry and non-DICOM files (no ``DICM`` marker) are left out.
    A DICOM file whose header cannot be parsed, or a CT, MR or PET image without those fields (which the
    standard requires: a truncated file), raises ``ValueError`` naming it instead of silently dropping a slice.
    """
    return _scan(folder, recursive)[0]


def _scan(source: str | os.PathLike, recursive: bool) -> tuple[dict[str, DicomSeries], list[str]]:
    """The series of a folder or file, and one line per DICOM file left out (why)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(source)
    single = root.is_file()
    if single:
        paths = [root]
    elif root.is_dir():
        paths = sorted(p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file())
    else:
        raise FileNotFoundError(f"DICOM input {root} does not exist (give a folder holding a series, or one file).")
    series: dict[str, DicomSeries] = {}
    skipped: list[str] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError as err:  # no 'DICM' marker: not a DICOM file
            if single:
                raise ValueError(f"{path} is not a DICOM file ({err}).") from err
            logger.debug("skipping %s: not a DICOM file (%s)", path, err)
            continue
        except Exception as err:  # pydicom raises many types on a damaged header
            raise ValueError(
                f"{path} is a DICOM file whose header cannot be read ({type(err).__name__}: {err}); "
                "repair it or move it out of the folder."
            ) from err
        reason = _not_an_image(ds, path, single)
        if reason is not None:
            logger.debug("skipping %s: %s", path, reason)
            skipped.append(f"{path}: {reason}")
            continue
        uid = _text(ds, "SeriesInstanceUID", path)  # may be empty in anonymised data: one group
        entry = series.setdefault(
            uid, DicomSeries(uid, _text(ds, "Modality", path), _text(ds, "SeriesDescription", path))
        )
        entry.files.append(str(path))
    return series, skipped


def _not_an_image(ds: Any, path: Path, single: bool) -> str | None:
    """Why ``ds`` is not an image with plane geometry, or None when it is one."""
    from unet_monai.io.dicom_frames import describe_sop_class

    sop_class = _text(ds, "SOPClassUID", path) or _text(getattr(ds, "file_meta", {}), "MediaStorageSOPClassUID", path)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    missing = [k for k in _SLICE_KEYS if k not in ds]
    if sop_class in _PLANE_CLASSES and missing:  # the standard requires these fields
        raise ValueError(
            f"{path} is a {_PLANE_CLASSES[sop_class]} file without {', '.join(missing)}: it is truncated or damaged; "
            "repair it or move it out of the folder."
        )
    modality = _text(ds, "Modality", path).upper()
    if modality in _NOT_IMAGES or ("Rows" not in ds and sop_class not in _PLANE_CLASSES):  # a CT without Rows: damaged
        return f"not an image ({describe_sop_class(ds)}, Modality {modality or 'none'})"
    if enhanced:
        return None if single or "SeriesInstanceUID" in ds else "no SeriesInstanceUID"
    if single:
        missing = [k for k in missing if k != "SeriesInstanceUID"]
    if not missing:
        return None
    return f"{describe_sop_class(ds)} file without plane geometry ({', '.join(missing)} missing)"


def _is_dicom_input(path: str | os.PathLike) -> bool:
    """A folder, or a file named ``*.dcm``/``*.dicom``/``*.ima`` or carrying the ``DICM`` marker."""
    p = Path(str(path))
    if p.is_dir():
        return True
    if not p.is_file():
        return False
    if p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(p, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


class _Refusal(dict):
    """What :meth:`DicomSeriesReader.read` returns for an input it refuses: the error, raised by ``get_data``."""


class DicomSeriesReader(ImageReader):
    """Read one DICOM series from a folder (or one file) into ``(columns, rows, slices)`` with a correct affine.

    Classic single-frame series, enhanced multi-frame CT/MR (geometry from the functional groups), Siemens
    MOSAIC (tiles unpacked into slices), RT Dose (scaled by DoseGridScaling to Gy) and one-file series are read;
    see :mod:`unet_monai.io.dicom_frames`. A series that holds several acquisitions at the same positions
    (echoes, magnitude and phase, time points, b-values) is split by what tells them apart; choose one with
    ``acquisition`` (the refusal lists the choices and their slice counts).

    Used through MONAI's ``LoadImage``/``LoadImaged`` (``reader=DicomSeriesReader()``), a refused DICOM input
    stays refused: ``read`` hands the error to ``get_data``, which raises it, because ``LoadImage`` would
    otherwise swallow an error from ``read`` and try its own readers on the folder.

    Args:
        series_uid: read this SeriesInstanceUID.
        modality: keep only series of this Modality (``"CT"``, ``"MR"``, ...).
        description: keep only series whose SeriesDescription matches this regular expression.
        select: when several series (or acquisitions) remain, ``"only"`` raises an error that lists them,
            ``"most_slices"`` takes the one with the most image files (slices).
        acquisition: attribute -> value that picks one acquisition of a series, e.g. ``{"EchoNumbers": 2}``,
            ``{"ImageType": "ORIGINAL\\PRIMARY\\P"}``, ``{"DiffusionBValue": 1000}`` (the names and values that
            the refusal lists).
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
        acquisition: Mapping[str, str | int | float] | None = None,
    ) -> None:
        super().__init__()
        if select not in _SELECT:
            raise ValueError(f"select must be one of {_SELECT}, got {select!r}.")
        if on_irregular_spacing not in _IRREGULAR:
            raise ValueError(f"on_irregular_spacing must be one of {_IRREGULAR}, got {on_irregular_spacing!r}.")
        if acquisition is not None and not isinstance(acquisition, Mapping):
            raise ValueError(f"acquisition must be a mapping of attribute name to value, got {acquisition!r}.")
        self.series_uid = series_uid
        self.modality = modality
        self.description = description
        self.select = select
        self.on_irregular_spacing = on_irregular_spacing
        self.allow_gantry_tilt = allow_gantry_tilt
        self.spacing_tolerance = spacing_tolerance
        self.affine_lps_to_ras = affine_lps_to_ras
        self.recursive = recursive
        self.acquisition = dict(acquisition) if acquisition is not None else None

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """A folder, a ``.dcm`` file or a file with the DICOM marker is ours; other files are left to other readers.

        ``LoadImage`` hands over a tuple of paths; one path in it is accepted."""
        if isinstance(filename, (list, tuple)):
            return len(filename) == 1 and _is_dicom_input(filename[0])
        return _is_dicom_input(str(filename))

    # ------------------------------------------------------------------ choosing the series
    def choose_series(self, folder: str | os.PathLike) -> DicomSeries:
        """The one series of ``folder`` that the settings select, or a ValueError that lists the series."""
        found, skipped = _scan(folder, self.recursive)
        if not found:
            why = f"; left out: {'; '.join(skipped[:5])}" + (
                f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            )
            raise ValueError(f"DICOM input {folder} holds no DICOM image series{why if skipped else ''}.")
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
        """Read the chosen series of folder (or file) ``data``: sorted frames, checked geometry.

        A path that is not a DICOM input (see :meth:`verify_suffix`) raises at once, so that ``LoadImage`` may
        try its other readers. For a DICOM input the result of a refusal is handed to :meth:`get_data`, which
        raises it (``LoadImage`` calls that outside its reader fallback)."""
        if isinstance(data, (list, tuple)):
            if len(data) != 1:
                raise ValueError(f"DicomSeriesReader reads one folder or file at a time, got {len(data)} paths.")
            data = data[0]
        source = str(data)
        if not _is_dicom_input(source):
            raise ValueError(f"DicomSeriesReader reads a DICOM folder or file, got {source} (not one).")
        try:
            series, frames = self.sorted_frames(source, stop_before_pixels=False)
            return self._assemble(source, series, frames)
        except Exception as err:  # any refusal of a DICOM input must reach the user, not MONAI's fallback
            return _Refusal(error=err, source=source)

    def sorted_frames(self, folder: str | os.PathLike, stop_before_pixels: bool = True) -> tuple[DicomSeries, list]:
        """The chosen series (and acquisition) of ``folder``: its :class:`~unet_monai.io.dicom_frames.Frame` list in
        slice order (ascending position along the slice normal), after checking that orientation, size and pixel
        spacing agree and that no position repeats."""
        from unet_monai.io.dicom_frames import frames_of

        folder = str(folder)
        series = self.choose_series(folder)
        frames = [f for path in series.files for f in frames_of(_read(path, stop_before_pixels), path)]
        frames = choose_acquisition(frames, self.acquisition, self.select, f"DICOM series {series.uid} in {folder}")
        first = frames[0]
        row, col = first.orientation[:3], first.orientation[3:]
        if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
            raise ValueError(
                f"{first.where}: ImageOrientationPatient must be two orthogonal unit vectors, got "
                f"{first.orientation.tolist()}."
            )
        for frame in frames:
            if not np.allclose(frame.orientation, first.orientation, atol=1e-4):
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {frame.where} has ImageOrientationPatient "
                    f"{frame.orientation.tolist()}, others {first.orientation.tolist()}; mixed orientations."
                )
            if (frame.rows, frame.columns) != (first.rows, first.columns):
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {frame.where} is {frame.rows}x{frame.columns}, "
                    f"others {first.rows}x{first.columns}."
                )
            if not np.allclose(frame.spacing, first.spacing, rtol=1e-4, atol=1e-6):
                raise ValueError(
                    f"DICOM series {series.uid} in {folder}: {frame.where} has PixelSpacing {frame.spacing.tolist()}, "
                    f"others {first.spacing.tolist()}; mixed pixel spacing."
                )
        normal = first.normal
        along = np.array([f.position @ normal for f in frames])
        order = np.argsort(along, kind="stable")
        frames = [frames[i] for i in order]
        along = along[order]
        if len(frames) > 1 and np.any(np.diff(along) < 1e-3):
            k = int(np.argmin(np.diff(along)))
            raise ValueError(
                f"DICOM series {series.uid} in {folder}: {frames[k].where} and {frames[k + 1].where} lie at the same "
                f"position along the slice normal ({along[k]:.3f} mm): duplicate slices or several acquisitions "
                f"that no attribute of {list(ACQUISITION_KEYS)} tells apart."
            )
        return series, frames

    def sorted_slices(
        self, folder: str | os.PathLike, stop_before_pixels: bool = True
    ) -> tuple[DicomSeries, list, list]:
        """The chosen series of single-frame files: pydicom datasets and files in slice order (what a DICOM SEG
        references). A ValueError names the file where the series is multi-frame, MOSAIC or RT Dose."""
        series, frames = self.sorted_frames(folder, stop_before_pixels)
        other = next((f for f in frames if f.kind != "classic"), None)
        if other is not None:
            raise ValueError(
                f"{other.path}: DICOM SEG output is written for series of single-frame images, got a "
                f"{_VARIANTS[other.kind]} series in {folder}; write the labels as NIfTI instead."
            )
        return series, [f.ds for f in frames], [f.path for f in frames]

    def get_data(self, img: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """``(columns, rows, slices)`` float32 array and its metadata (affine, spacing, series identity).

        Raises the error of a refused input (see :meth:`read`)."""
        if isinstance(img, _Refusal):
            raise img["error"]
        return img["array"], img["meta"]

    # ------------------------------------------------------------------ geometry and pixels
    def _assemble(self, folder: str, series: DicomSeries, frames: list) -> dict[str, Any]:
        from unet_monai.io.dicom_frames import frame_pixels

        first = frames[0]
        row_dir, col_dir = first.orientation[:3], first.orientation[3:]  # along a row (columns increase), a column
        normal = first.normal
        positions = np.array([f.position for f in frames])
        along = positions @ normal
        if len(frames) > 1:
            step = float(np.median(np.diff(along)))
        else:
            step = first.thickness or _number(first.ds, "SliceThickness", 1.0, first.path)
            if step <= 0:
                raise ValueError(f"{first.where}: SliceThickness must be > 0 for a single-slice series, got {step}.")
        slice_vector = normal * step
        if len(frames) > 1:
            direction = (positions[-1] - positions[0]) / np.linalg.norm(positions[-1] - positions[0])
            tilt = float(np.degrees(np.arccos(np.clip(abs(direction @ normal), -1.0, 1.0))))
            if tilt > 0.1:
                if not self.allow_gantry_tilt:
                    raise ValueError(
                        f"DICOM series {series.uid} in {folder}: slices are offset at {tilt:.2f} degrees from their "
                        "normal (gantry tilt); pass allow_gantry_tilt=True to keep the sheared geometry."
                    )
                slice_vector = (positions[-1] - positions[0]) / (len(frames) - 1)
        decoded: dict[str, np.ndarray] = {}
        pixels = np.stack([frame_pixels(f, decoded) for f in frames], axis=-1)  # (rows, cols, n)
        decoded.clear()

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
                    f"DICOM series {series.uid} in {folder}: {what} between {frames[k].where} and "
                    f"{frames[k + 1].where} ({steps[k]:.3f} mm apart, median step {step:.3f} mm); pass "
                    "on_irregular_spacing='resample' to interpolate onto a uniform grid."
                )
            logger.warning("DICOM series %s: %s; resampling to a uniform %.3f mm grid", series.uid, what, step)
            pixels, along = _resample_slices(pixels, along, step)

        row_spacing, col_spacing = (float(v) for v in first.spacing)  # between rows, between columns
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
            "StudyInstanceUID": _text(first.ds, "StudyInstanceUID", first.path),
            "Modality": series.modality,
            "SeriesDescription": series.description,
            "DicomVariant": first.kind,
        }
        if first.kind == "rtdose":
            meta["DoseUnits"] = _text(first.ds, "DoseUnits", first.path).upper()
        return {"array": array, "meta": meta}


_VARIANTS = {
    "classic": "single-frame",
    "enhanced": "enhanced multi-frame",
    "mosaic": "Siemens MOSAIC",
    "rtdose": "RT Dose",
}


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
