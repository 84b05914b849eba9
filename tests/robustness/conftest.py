"""Writers of small, valid inputs that the robustness tests then damage: DICOM series with fake PHI, NIfTI files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# Recognisable fake patient data: no log line or error message may contain these.
PHI = {"PatientName": "Zzyzx^Quilla^PHINAME", "PatientID": "PHIID-938475", "PatientBirthDate": "19230417"}


def dicom_slice(
    path: Path,
    index: int,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
    pixels: np.ndarray,
    spacing: float = 2.0,
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    description: str = "robustness CT",
    **tags: object,
) -> Path:
    """Write one axial CT slice ``pixels`` ``(rows, columns)`` at z = ``index * spacing``, uncompressed.

    The instance UID derives from ``series_uid`` and ``index``, so equal arguments write equal bytes.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "ACC1", ""
    ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20240101", "120000", 1, index + 1
    ds.Modality, ds.SeriesDescription, ds.Manufacturer = "CT", description, "test"
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0.0, 0.0, index * spacing]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = spacing
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.astype(np.int16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def phi() -> dict[str, str]:
    """The fake patient data in every slice that ``dicom_series`` writes."""
    return dict(PHI)


@pytest.fixture
def dicom_series() -> Callable[..., list[Path]]:
    """Write ``slices`` slices of ``rows x columns`` into ``folder`` as one series (fake PHI included).

    UIDs derive from the call's number within the test and ``seed``: every run of a test writes the same bytes
    (the fuzz tests' damage is then repeatable), and two calls in one test write two distinct series.
    """
    from itertools import count

    from pydicom.uid import generate_uid

    calls = count()

    def write(
        folder: Path, slices: int = 4, rows: int = 12, columns: int = 10, seed: int = 0, **kwargs: object
    ) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        call = next(calls)
        uids = tuple(generate_uid(entropy_srcs=[kind, str(call), str(seed)]) for kind in ("study", "series", "frame"))
        return [
            dicom_slice(
                folder / f"{uids[0][-8:]}_{i:03d}.dcm", i, *uids, rng.integers(0, 2000, (rows, columns)), **kwargs
            )
            for i in range(slices)
        ]

    return write


@pytest.fixture
def nifti_file(tmp_path: Path) -> Callable[..., Path]:
    """Write ``array`` as NIfTI at ``tmp_path / name`` with ``affine`` (identity by default)."""

    def write(name: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
        return path

    return write
