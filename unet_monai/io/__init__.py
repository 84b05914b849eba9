"""Input and output: DICOM series and TIFF stacks in, atomic NIfTI and DICOM SEG out, datalists (manifests)."""

from unet_monai.io.dicom import DicomSeries, DicomSeriesReader, find_dicom_series
from unet_monai.io.manifest import load_manifest, manifest_data_root
from unet_monai.io.readers import StrictLoadImaged
from unet_monai.io.tiff import TiffStackReader
from unet_monai.io.writers import AtomicNibabelWriter

__all__ = [
    "AtomicNibabelWriter",
    "StrictLoadImaged",
    "TiffStackReader",
    "DicomSeriesReader",
    "DicomSeries",
    "find_dicom_series",
    "load_manifest",
    "manifest_data_root",
]
