"""DICOM SEG output through highdicom (the ``dicom`` extra): a label map back onto the series it came from.

None of MONAI, nnU-Net or TorchIO writes DICOM SEG. The label map must lie on the grid that
:class:`~unet_monai.io.DicomSeriesReader` gave for the series (``(columns, rows, slices)``, slices in
ascending position), which is what inference on that series produces.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from unet_monai.io.atomic import atomic_path
from unet_monai.io.dicom import DicomSeriesReader
from unet_monai.io.paths import contained_path, safe_filename

__all__ = ["write_dicom_seg", "SaveDicomSegd"]

logger = logging.getLogger(__name__)


def write_dicom_seg(
    label: Any,
    series_folder: str | os.PathLike,
    path: str | os.PathLike,
    label_names: Mapping[int, str],
    reader: DicomSeriesReader | None = None,
    series_description: str = "unet_monai segmentation",
    algorithm_name: str = "unet_monai PaperUNet",
    algorithm_version: str | None = None,
) -> Path:
    """Write ``label`` as a binary DICOM SEG that references the source series, atomically.

    Args:
        label: integer label map ``(X, Y, Z)`` or ``(1, X, Y, Z)`` (columns, rows, slices) on the series grid.
        series_folder: the folder of the source series (read again for its headers).
        path: the SEG file to write; never one of the source files.
        label_names: label value -> segment label ("liver"); values in ``label`` but not here are an error,
            0 is background.
        reader: the reader settings that chose the series (the default picks the only series).
        series_description: SeriesDescription of the SEG.
        algorithm_name: AlgorithmName of every segment (algorithm type AUTOMATIC).
        algorithm_version: AlgorithmVersion; the package version by default.

    Returns:
        The path written.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from unet_monai import __version__

    reader = reader or DicomSeriesReader()
    series, datasets, files = reader.sorted_slices(series_folder, stop_before_pixels=True)
    array = np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    expected = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    if array.shape != expected:
        raise ValueError(
            f"label must lie on the grid of series {series.uid} in {series_folder}, (columns, rows, slices) = "
            f"{expected}, got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"label must hold integer label values, got dtype {array.dtype} with fractions.")
    array = array.astype(np.uint16)
    values = sorted(int(v) for v in np.unique(array) if v != 0)
    if not values:
        raise ValueError("label holds no foreground (only 0): a DICOM SEG needs at least one segment.")
    missing = [v for v in values if v not in label_names]
    if missing:
        raise ValueError(f"label_names has no name for label values {missing} (names given: {dict(label_names)}).")
    target = Path(path).resolve()
    if any(target == Path(f).resolve() for f in files):
        raise ValueError(f"refusing to write the SEG over its source file {target}.")

    for ds in datasets:  # in-memory headers: an empty SpecificCharacterSet means the default, which highdicom refuses
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version or __version__, family=codes.cid7162.ArtificialIntelligence
    )
    # segment numbers must run 1..n: map label values onto them, in ascending order
    number = {value: i + 1 for i, value in enumerate(values)}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number[value],
            segment_label=str(label_names[value]),
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for value in values
    ]
    frames = np.zeros((len(datasets), expected[1], expected[0]), dtype=np.uint16)  # (slices, rows, columns)
    for value in values:
        frames[np.transpose(array, (2, 1, 0)) == value] = number[value]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(datasets[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="unet_monai",
        manufacturer_model_name=algorithm_name,
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
    )
    with atomic_path(target) as tmp:
        seg.save_as(tmp)
    return target


class SaveDicomSegd(MapTransform):
    """Write the label map under ``keys`` as DICOM SEG for items that came from a DICOM series folder.

    The SEG goes to ``output_dir/<folder name>_<output_postfix>.dcm`` (the name passed through
    :func:`~unet_monai.io.paths.safe_filename`, so it stays inside ``output_dir``; no DICOM tag is part of it);
    items read from other files are passed through untouched (their NIfTI output is written by ``SaveImaged``).

    Args:
        keys: label-map keys (``(1, X, Y, Z)`` integer labels on the series grid).
        output_dir: folder for the SEG files.
        label_names: label value -> segment name.
        output_postfix: appended to the series folder's name.
        reader: the reader settings that chose the series.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        label_names: Mapping[int, str],
        output_postfix: str = "seg",
        reader: DicomSeriesReader | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.label_names = dict(label_names)
        self.output_postfix = output_postfix
        self.reader = reader

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = getattr(d[key], "meta", {}).get("filename_or_obj", "")
            if not source or not Path(str(source)).is_dir():
                logger.debug("%s: not from a DICOM folder, no SEG written", source)
                continue
            name = safe_filename(f"{Path(str(source)).name}_{self.output_postfix}", default="series") + ".dcm"
            if not np.any(np.asarray(d[key])):
                logger.warning("%s: the segmentation is empty; a DICOM SEG needs a segment, none written", source)
                continue
            write_dicom_seg(d[key], source, contained_path(self.output_dir, name), self.label_names, self.reader)
        return d
