"""Input and output: DICOM series reading, datalists (manifests)."""

from unet_monai.io.dicom import DicomSeries, DicomSeriesReader, find_dicom_series
from unet_monai.io.manifest import load_manifest, manifest_data_root
from unet_monai.io.readers import StrictLoadImaged
from unet_monai.io.writers import AtomicNibabelWriter

__all__ = [
    "AtomicNibabelWriter",
    "StrictLoadImaged",
    "DicomSeriesReader",
    "DicomSeries",
    "find_dicom_series",
    "load_manifest",
    "manifest_data_root",
]
