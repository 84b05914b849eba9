"""The 2D frames of DICOM image files, each with its own plane geometry: the unit :mod:`unet_monai.io.dicom` sorts.

A file gives one frame (classic CT/MR/PET single-frame images) or several:

- enhanced multi-frame CT/MR/PET: position, orientation, pixel spacing and rescaling of each frame from the
  Per-frame Functional Groups, falling back to the Shared Functional Groups (PS3.3 C.7.6.16);
- Siemens MOSAIC: the tiles of one 2D frame are the slices of a volume; their count, slice normal and the
  position of the first slice come from the CSA header, read by nibabel's ``nicom`` (the position in the file
  refers to the whole mosaic);
- RT Dose: the frames lie at GridFrameOffsetVector along the normal; values scaled by DoseGridScaling (Gy when
  DoseUnits is ``GY``).

Files without plane geometry (secondary capture, ultrasound, radiographs), colour images and unknown multi-frame
layouts are refused with a message that names the file and the variant.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame", "frames_of", "frame_pixels", "describe_sop_class", "acquisition_labels", "choose_acquisition"]

logger = logging.getLogger(__name__)

# attributes that tell acquisitions of one series apart, in the order they are tried
ACQUISITION_KEYS = (
    "EchoNumbers",
    "EffectiveEchoTime",
    "ImageType",
    "TemporalPositionIdentifier",
    "DiffusionBValue",
    "AcquisitionNumber",
    "StackID",
    "TemporalPositionIndex",
    "MosaicInstanceNumber",
)


@dataclass
class Frame:
    """One 2D frame of a file and where it lies in the patient (LPS, mm).

    Attributes:
        path: the file.
        ds: its pydicom dataset (pixels included when it was read with them).
        index: frame number in a multi-frame file (0-based), None for a single-frame file.
        position: ImagePositionPatient of the frame's first pixel, ``(3,)`` mm.
        orientation: ImageOrientationPatient, row then column direction cosines, ``(6,)``.
        spacing: PixelSpacing (between rows, between columns), ``(2,)`` mm.
        rows: rows of the frame (of one tile for MOSAIC).
        columns: columns of the frame.
        slope: rescale slope (DoseGridScaling for RT Dose).
        intercept: rescale intercept.
        tile: MOSAIC tile (tile row, tile column), None otherwise.
        kind: ``"classic"``, ``"enhanced"``, ``"mosaic"`` or ``"rtdose"``.
        labels: acquisition attributes of the frame (see ``ACQUISITION_KEYS``), as text.
        thickness: slice thickness from the functional groups (enhanced), None otherwise.
    """

    path: str
    ds: Any
    index: int | None
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0
    tile: tuple[int, int] | None = None
    kind: str = "classic"
    labels: dict[str, str] = field(default_factory=dict)
    thickness: float | None = None

    @property
    def normal(self) -> np.ndarray:
        """Unit normal: the cross product of the row and column directions."""
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def where(self) -> str:
        """The file, with the frame or tile number where it holds several."""
        if self.tile is not None:
            return f"{self.path} (mosaic tile {self.tile})"
        return self.path if self.index is None else f"{self.path} (frame {self.index + 1})"


def describe_sop_class(ds: Any) -> str:
    """The SOP class of ``ds`` by name ("CT Image Storage"), or its UID, or "unknown SOP class"."""
    from pydicom.uid import UID

    value = str(ds.get("SOPClassUID", "") or "") or str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
    if not value:
        return "unknown SOP class"
    name = UID(value).name
    return name if name and name != value else value


def frames_of(ds: Any, path: str) -> list[Frame]:
    """The frames of one file with their geometry; a ValueError naming the file and the variant otherwise."""
    from unet_monai.io.dicom import _check_header, _number, _numbers, _text

    samples = int(_number(ds, "SamplesPerPixel", 1.0, path) or 1)
    if samples != 1:
        raise ValueError(
            f"{path}: SamplesPerPixel must be 1 (a grey-level image), got {samples} "
            f"({_text(ds, 'PhotometricInterpretation', path) or 'colour'}, {describe_sop_class(ds)}): colour images "
            "are not read."
        )
    count = int(_number(ds, "NumberOfFrames", 1.0, path))
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, path, count)
    _check_header(ds, path)
    position = _numbers(ds, "ImagePositionPatient", 3, path)
    orientation = _numbers(ds, "ImageOrientationPatient", 6, path)
    spacing = _numbers(ds, "PixelSpacing", 2, path)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if _text(ds, "Modality", path).upper() == "RTDOSE" or "GridFrameOffsetVector" in ds:
        return _dose_frames(ds, path, count, position, orientation, spacing)
    slope, intercept = _number(ds, "RescaleSlope", 1.0, path) or 1.0, _number(ds, "RescaleIntercept", 0.0, path)
    if "MOSAIC" in image_type:
        return _mosaic_frames(ds, path, orientation, spacing, slope, intercept)
    if count != 1:
        raise ValueError(
            f"{path}: a {describe_sop_class(ds)} file with {count} frames and one ImagePositionPatient (no functional "
            "groups, no GridFrameOffsetVector): where its frames lie is not stated; only single-frame files, "
            "enhanced multi-frame, Siemens MOSAIC and RT Dose are read."
        )
    return [Frame(path, ds, None, position, orientation, spacing, rows, columns, slope, intercept)]


def _item(ds: Any, group: Any, macro: str) -> Any:
    """The first item of functional-group macro ``macro`` in ``group`` (a dataset), or None."""
    sequence = group.get(macro) if group is not None else None
    return sequence[0] if sequence else None


def _enhanced_frames(ds: Any, path: str, count: int) -> list[Frame]:
    from unet_monai.io.dicom import _numbers

    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) not in (0, count):
        raise ValueError(
            f"{path}: PerFrameFunctionalGroupsSequence must have one item per frame (NumberOfFrames {count}), "
            f"got {len(per_frame)}; the file is damaged."
        )
    rows, columns = int(_numbers(ds, "Rows", 1, path)[0]), int(_numbers(ds, "Columns", 1, path)[0])
    frames = []
    for index in range(count):
        own = per_frame[index] if per_frame else None
        where = f"{path} (frame {index + 1})"

        def find(macro: str, own: Any = own) -> Any:
            return _item(ds, own, macro) or _item(ds, shared, macro)

        plane, orient, measures = (
            find("PlanePositionSequence"),
            find("PlaneOrientationSequence"),
            find("PixelMeasuresSequence"),
        )
        missing = [
            name
            for name, item in (
                ("PlanePositionSequence", plane),
                ("PlaneOrientationSequence", orient),
                ("PixelMeasuresSequence", measures),
            )
            if item is None
        ]
        if missing:
            raise ValueError(
                f"{where}: a {describe_sop_class(ds)} frame without {', '.join(missing)} in its functional groups "
                "has no plane geometry; it is not read."
            )
        orientation = _numbers(orient, "ImageOrientationPatient", 6, where)
        spacing = _numbers(measures, "PixelSpacing", 2, where)
        if np.any(spacing <= 0):
            raise ValueError(f"{where}: PixelSpacing must be positive, got {spacing.tolist()}.")
        transform = find("PixelValueTransformationSequence")
        slope = float(_numbers(transform, "RescaleSlope", 1, where)[0]) if transform is not None else 1.0
        intercept = float(_numbers(transform, "RescaleIntercept", 1, where)[0]) if transform is not None else 0.0
        labels = {}
        content = find("FrameContentSequence")
        if content is not None:
            for key in ("StackID", "TemporalPositionIndex"):
                if key in content:
                    labels[key] = str(content.get(key))
        echo = find("MREchoSequence")
        if echo is not None and "EffectiveEchoTime" in echo:
            labels["EffectiveEchoTime"] = f"{float(echo.EffectiveEchoTime):g}"
        diffusion = find("MRDiffusionSequence")
        if diffusion is not None and "DiffusionBValue" in diffusion:
            labels["DiffusionBValue"] = str(diffusion.DiffusionBValue)
        frame_type = find("MRImageFrameTypeSequence") or find("CTImageFrameTypeSequence")
        if frame_type is not None and "FrameType" in frame_type:
            labels["ImageType"] = "\\".join(str(v) for v in frame_type.FrameType)
        frames.append(
            Frame(
                path,
                ds,
                index,
                _numbers(plane, "ImagePositionPatient", 3, where),
                orientation,
                spacing,
                rows,
                columns,
                slope or 1.0,
                intercept,
                kind="enhanced",
                labels=labels,
                thickness=_positive(measures.get("SliceThickness")),
            )
        )
    return frames


def _dose_frames(
    ds: Any, path: str, count: int, position: np.ndarray, orientation: np.ndarray, spacing: np.ndarray
) -> list[Frame]:
    from unet_monai.io.dicom import _number, _numbers, _text

    scaling = _number(ds, "DoseGridScaling", float("nan"), path)
    if not np.isfinite(scaling) or scaling <= 0:
        raise ValueError(
            f"{path}: RT Dose needs DoseGridScaling (a positive number) to give doses, got "
            f"{ds.get('DoseGridScaling')!r}; the stored integers are not doses."
        )
    units = _text(ds, "DoseUnits", path).upper()
    if units not in ("GY", "RELATIVE"):
        raise ValueError(f"{path}: DoseUnits must be GY or RELATIVE, got {units!r}.")
    if count > 1:
        offsets = _numbers(ds, "GridFrameOffsetVector", count, path)
    else:
        offsets = np.zeros(1)
    normal = np.cross(orientation[:3], orientation[3:])
    # offsets are relative to ImagePositionPatient when the first is 0, else z coordinates with IPP at the first one
    relative = offsets - offsets[0]
    rows, columns = int(ds.Rows), int(ds.Columns)
    return [
        Frame(
            path,
            ds,
            i if count > 1 else None,
            position + relative[i] * normal,
            orientation,
            spacing,
            rows,
            columns,
            scaling,
            0.0,
            kind="rtdose",
        )
        for i in range(count)
    ]


def _mosaic_frames(
    ds: Any, path: str, orientation: np.ndarray, spacing: np.ndarray, slope: float, intercept: float
) -> list[Frame]:
    from nibabel.nicom import dicomwrappers

    try:
        wrapper = dicomwrappers.wrapper_from_data(ds)
        count = int(wrapper.n_mosaic)
        size = int(wrapper.mosaic_size)
        first = np.asarray(wrapper.image_position, dtype=np.float64)
        normal = np.asarray(wrapper.slice_normal, dtype=np.float64)
        step = float(wrapper.voxel_sizes[2])
    except Exception as err:  # nibabel raises several types on a missing or damaged CSA header
        raise ValueError(
            f"{path}: a Siemens MOSAIC image whose CSA header (0029,1010) does not give the number of tiles, the "
            f"slice normal and the slice spacing ({type(err).__name__}: {err}); its tiles cannot be placed."
        ) from err
    rows, columns = int(ds.Rows), int(ds.Columns)
    if count < 1 or size < 1 or rows % size or columns % size or not np.all(np.isfinite(first)) or step <= 0:
        raise ValueError(
            f"{path}: Siemens MOSAIC of {rows}x{columns} pixels must split into {size}x{size} equal tiles holding "
            f"{count} slices {step} mm apart; the CSA header and the image disagree."
        )
    labels = {"MosaicInstanceNumber": str(ds.get("InstanceNumber", ""))}
    return [
        Frame(
            path,
            ds,
            None,
            first + k * step * normal,
            orientation,
            spacing,
            rows // size,
            columns // size,
            slope,
            intercept,
            tile=(k // size, k % size),
            kind="mosaic",
            labels=labels,
        )
        for k in range(count)
    ]


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def acquisition_labels(frame: Frame) -> dict[str, str]:
    """The attributes of ``ACQUISITION_KEYS`` that the frame carries, as text (those of its file, then its own).

    The b-value comes from DiffusionBValue (0018,9087) or, for Siemens, the CSA image header (``B_value``)."""
    ds = frame.ds
    labels: dict[str, str] = {}
    for key in ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber", "DiffusionBValue"):
        try:
            value = ds.get(key)
        except Exception:  # a damaged value: it tells nothing apart
            value = None
        if value is not None and str(value).strip():
            labels[key] = (
                "\\".join(str(v) for v in value)
                if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")
                else f"{value}"
            )
    image_type = ds.get("ImageType")
    if image_type:
        labels["ImageType"] = "\\".join(str(v) for v in image_type) if not isinstance(image_type, str) else image_type
    if "DiffusionBValue" not in labels and (0x0029, 0x1010) in ds:
        try:
            from nibabel.nicom import csareader

            b_value = csareader.get_b_value(csareader.get_csa_header(ds, "image"))
        except Exception:  # no or a damaged CSA header: no b-value
            b_value = None
        if b_value is not None:
            labels["DiffusionBValue"] = f"{float(b_value):g}"
    labels.update(frame.labels)
    return labels


def choose_acquisition(
    frames: list, acquisition: Mapping[str, Any] | None, select: str = "only", what: str = "DICOM series"
) -> list:
    """The frames of one acquisition: those matching ``acquisition``, split where several lie at one position.

    When frames repeat a position, the attributes of ``ACQUISITION_KEYS`` that vary are taken, fewest first, until
    each group holds every position once; then ``select="most_slices"`` takes a strictly largest group and
    otherwise a ValueError lists the groups (attribute values, slice counts) for ``acquisition``.
    """
    if acquisition is None and _unique_positions(frames):
        return frames
    labels = [acquisition_labels(f) for f in frames]
    if acquisition:
        unknown = [k for k in acquisition if k not in ACQUISITION_KEYS]
        if unknown:
            raise ValueError(f"acquisition must name attributes of {list(ACQUISITION_KEYS)}, got {unknown}.")
        keep = [i for i, lab in enumerate(labels) if all(_same(lab.get(k), v) for k, v in acquisition.items())]
        if not keep:
            groups = _groups(frames, labels, list(acquisition))
            raise ValueError(
                f"{what}: no frame matches acquisition={dict(acquisition)}; the series holds "
                + "; ".join(_describe(key, members) for key, members in groups.items())
                + "."
            )
        frames, labels = [frames[i] for i in keep], [labels[i] for i in keep]
        if _unique_positions(frames):
            return frames
    keys = _splitting_keys(frames, labels)
    if keys is None:
        return frames  # no attribute tells them apart: the duplicate check names the files
    groups = _groups(frames, labels, keys)
    ranked = sorted(groups.values(), key=len, reverse=True)
    if select == "most_slices" and len(ranked[0]) > len(ranked[1]):
        return ranked[0]
    choices = "; ".join(_describe(key, members) for key, members in groups.items())
    example = dict(next(iter(groups)))
    raise ValueError(
        f"{what} holds {len(groups)} acquisitions at the same slice positions, told apart by {', '.join(keys)}: "
        f"{choices}. Choose one with acquisition={example!r} (or select='most_slices')."
    )


def _same(label: str | None, wanted: Any) -> bool:
    if label is None:
        return False
    if str(wanted) == label:
        return True
    try:
        return float(wanted) == float(label)
    except (TypeError, ValueError):
        return False


def _unique_positions(frames: list) -> bool:
    if len(frames) < 2:
        return True
    normal = frames[0].normal
    along = np.sort([f.position @ normal for f in frames])
    return bool(np.all(np.diff(along) >= 1e-3))


def _groups(frames: list, labels: list[dict[str, str]], keys: list[str]) -> dict[tuple, list]:
    groups: dict[tuple, list] = {}
    for frame, lab in zip(frames, labels):
        groups.setdefault(tuple(lab.get(k, "") for k in keys), []).append(frame)
    return {tuple(zip(keys, key)): members for key, members in groups.items()}


def _describe(key: tuple, members: list) -> str:
    return ", ".join(f"{k}={v or '(none)'}" for k, v in key) + f" ({len(members)} slices)"


def _splitting_keys(frames: list, labels: list[dict[str, str]]) -> list[str] | None:
    """The fewest varying acquisition attributes whose groups each hold every position once, or None."""
    varying = [k for k in ACQUISITION_KEYS if len({lab.get(k, "") for lab in labels}) > 1]
    chosen: list[str] = []
    for key in varying:
        chosen.append(key)
        if _splits(frames, labels, chosen):
            break
    else:
        return None
    for key in list(chosen):  # drop what is not needed (an AcquisitionNumber that differs per slice)
        rest = [k for k in chosen if k != key]
        if rest and _splits(frames, labels, rest):
            chosen = rest
    return chosen


def _splits(frames: list, labels: list[dict[str, str]], keys: list[str]) -> bool:
    return all(_unique_positions(members) for members in _groups(frames, labels, keys).values())


def frame_pixels(frame: Frame, decoded: dict[str, np.ndarray]) -> np.ndarray:
    """The frame in real-world values (rescale or dose scaling applied), float32 ``(rows, columns)``.

    ``decoded`` caches each file's decoded pixel array, so that a multi-frame file is decoded once."""
    values = decoded.get(frame.path)
    if values is None:
        values = _decode(frame.ds, frame.path)
        decoded[frame.path] = values
    if frame.index is not None:
        if values.ndim != 3 or frame.index >= values.shape[0]:
            raise ValueError(f"{frame.where}: the pixel data holds no such frame (array shape {values.shape}).")
        values = values[frame.index]
    elif values.ndim != 2:
        raise ValueError(f"{frame.path}: expected a single-frame 2D slice, got pixel array of shape {values.shape}.")
    if frame.tile is not None:
        r, c = frame.tile
        values = values[r * frame.rows : (r + 1) * frame.rows, c * frame.columns : (c + 1) * frame.columns]
    with np.errstate(over="ignore", invalid="ignore"):
        pixels = (values.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)).astype(np.float32)
    if not np.all(np.isfinite(pixels)):
        raise ValueError(
            f"{frame.where}: rescale slope {frame.slope} and intercept {frame.intercept} give values beyond float32 "
            "range."
        )
    return pixels


def _decode(ds: Any, path: str | os.PathLike) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as err:  # pydicom raises several types for missing decoders and corrupt data
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name = getattr(syntax, "name", str(syntax))
        raise RuntimeError(
            f"cannot decode the pixels of {path} (transfer syntax {syntax}, {name}): {err}. JPEG, JPEG-LS and "
            "JPEG 2000 need pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg (runtime dependencies)."
        ) from err
