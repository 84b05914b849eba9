"""Input and output: DICOM series, TIFF stacks and memory-mapped NIfTI in, atomic NIfTI and DICOM SEG out,
datalists (manifests)."""

from unet_monai.io.atomic import atomic_path
from unet_monai.io.dicom import DicomSeries, DicomSeriesReader, find_dicom_series
from unet_monai.io.dicom_seg import SaveDicomSegd, SegSources, seg_sources, write_dicom_seg
from unet_monai.io.manifest import (
    check_label_values,
    inference_items,
    load_manifest,
    manifest_class_names,
    manifest_data_root,
    manifest_ignore_label,
    manifest_label_values,
    manifest_labels,
)
from unet_monai.io.memmap import LoadMemmapNiftid, MemmapNiftiReader, view_collate
from unet_monai.io.paths import contained_path, safe_filename
from unet_monai.io.readers import StrictLoadImaged
from unet_monai.io.tiff import TiffStackReader
from unet_monai.io.writers import (
    AtomicNibabelWriter,
    AtomicPILWriter,
    AtomicTiffWriter,
    SaveLabels,
    SaveLabelsd,
    label_suffix,
)

__all__ = [
    "atomic_path",
    "AtomicNibabelWriter",
    "AtomicPILWriter",
    "AtomicTiffWriter",
    "SaveLabels",
    "SaveLabelsd",
    "label_suffix",
    "StrictLoadImaged",
    "TiffStackReader",
    "DicomSeriesReader",
    "SaveDicomSegd",
    "write_dicom_seg",
    "seg_sources",
    "SegSources",
    "DicomSeries",
    "find_dicom_series",
    "load_manifest",
    "inference_items",
    "manifest_labels",
    "manifest_class_names",
    "manifest_ignore_label",
    "manifest_label_values",
    "check_label_values",
    "manifest_data_root",
    "safe_filename",
    "contained_path",
    "LoadMemmapNiftid",
    "MemmapNiftiReader",
    "view_collate",
]
