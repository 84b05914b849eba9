"""DicomSeriesReader on DICOM as scanners write it: one file, enhanced multi-frame, Siemens MOSAIC, RT Dose,
compressed transfer syntaxes, several acquisitions in one series, and MONAI's LoadImage never falling back.

Real files: pydicom's test files and the pydicom-data package (``pydicom.data.get_testdata_file``), nibabel's
test DICOMs, the shared series of ../shared/data; damaged or re-encoded copies are made in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage, LoadImaged
from pydicom.data import get_testdata_file

from unet_monai.io import DicomSeriesReader, StrictLoadImaged

NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "nicom" / "tests" / "data"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CT_J2K = SHARED / "totalsegmentator-examples" / "example_ct_dicom"
CT_3SLICE = SHARED / "dcmqi-ct-seg" / "ct-3slice"
needs_shared = pytest.mark.skipif(
    not CT_J2K.is_dir() or not CT_3SLICE.is_dir(), reason=f"shared DICOM data not found at {SHARED}"
)


def pydicom_file(name: str) -> str:
    """A pydicom test file (pydicom's own or pydicom-data's); skips where pydicom-data is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is in the pydicom-data package (the 'test' extra), which is not installed")
    return str(path)


def load(path: str | Path, **kwargs) -> object:
    return LoadImage(image_only=True)(str(path), reader=DicomSeriesReader(**kwargs))


def nibabel_file(name: str, target: Path) -> Path:
    """One of nibabel's gzipped test DICOMs, decompressed into ``target``."""
    source = NIBABEL_DATA / f"{name}.dcm.gz"
    if not source.is_file():
        pytest.skip(f"nibabel's test DICOM {source} is not installed")
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.dcm"
    with gzip.open(source) as stream:
        path.write_bytes(stream.read())
    return path


# ---------------------------------------------------------------------------------------------- one file as input
def test_single_file_is_a_one_file_series(same_volume, sitk_volume):
    path = pydicom_file("CT_small.dcm")
    image = load(path)
    assert tuple(image.shape) == (128, 128, 1)
    ds = pydicom.dcmread(path)
    hounsfield = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(np.asarray(image)[..., 0].T, hounsfield)
    np.testing.assert_allclose(image.meta["spacing"], [*map(float, ds.PixelSpacing[::-1]), float(ds.SliceThickness)])
    same_volume(image, *sitk_volume(path))


def test_single_file_without_plane_geometry_is_refused_naming_it():
    path = pydicom_file("SC_rgb.dcm")
    with pytest.raises(ValueError, match=r"SC_rgb\.dcm.*Secondary Capture Image Storage file without plane geometry"):
        load(path)


def test_single_file_that_is_not_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file")
    with pytest.raises(ValueError, match=r"notes\.dcm is not a DICOM file"):
        load(path)


# ------------------------------------------------------------------------------------------- LoadImage fallback
@needs_shared
@pytest.mark.parametrize("how", ["runtime", "constructor", "dict", "class_name"])
def test_loadimage_never_falls_back_to_monai_readers(tmp_path, how):
    """A folder of two series is refused however the reader is passed (MONAI would read it with ITKReader)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in CT_3SLICE.iterdir():
        shutil.copyfile(f, folder / f.name)
    shutil.copyfile(pydicom_file("CT_small.dcm"), folder / "other.dcm")
    with pytest.raises(ValueError, match="2 matching series"):
        if how == "runtime":
            LoadImage(image_only=True)(str(folder), reader=DicomSeriesReader())
        elif how == "constructor":
            LoadImage(image_only=True, reader=DicomSeriesReader())(str(folder))
        elif how == "dict":
            LoadImaged("image", image_only=True, reader=DicomSeriesReader())({"image": str(folder)})
        else:
            LoadImage(image_only=True, reader="unet_monai.io.DicomSeriesReader")(str(folder))


def test_non_dicom_file_is_left_to_the_other_readers(write_nifti):
    path = write_nifti("image.nii.gz")
    assert not DicomSeriesReader().verify_suffix(str(path))
    image = LoadImage(image_only=True, reader=[DicomSeriesReader()])(str(path))  # nibabel reads it
    assert tuple(image.shape) == (16, 16)


def test_strict_loader_accepts_a_single_dicom_file():
    path = pydicom_file("MR_small.dcm")
    loaded = StrictLoadImaged("image", reader=DicomSeriesReader(), image_only=True)({"image": path})
    assert tuple(loaded["image"].shape) == (64, 64, 1)


# ------------------------------------------------------------------------------------ compressed transfer syntaxes
@pytest.mark.parametrize(
    "compressed, uncompressed",
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
        ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit VR big endian
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless CT (pydicom-data)
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ],
)
def test_compressed_syntaxes_decode_to_the_uncompressed_voxels(compressed, uncompressed):
    ours, reference = load(pydicom_file(compressed)), load(pydicom_file(uncompressed))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(reference.affine))


def test_jpeg_lossless_process14_matches_simpleitk(same_volume, sitk_volume):
    """JPEG Lossless, first-order prediction (1.2.840.10008.1.2.4.70), the commonest lossless PACS syntax."""
    path = pydicom_file("bad_sequence.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    image = load(path)
    same_volume(image, *sitk_volume(path))  # GDCM's decoder, voxel for voxel


def test_jpeg_lossless_of_a_secondary_capture_given_geometry(tmp_path, sitk_volume):
    """JPEG-LL.dcm (no plane geometry) with geometry added: decoded like GDCM decodes it."""
    ds = pydicom.dcmread(pydicom_file("JPEG-LL.dcm"))
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.save_as(tmp_path / "ll.dcm")
    reference, _ = sitk_volume(tmp_path / "ll.dcm")
    np.testing.assert_array_equal(np.asarray(load(tmp_path / "ll.dcm")), reference.astype(np.float32))


# ---------------------------------------------------------------------------------------- enhanced multi-frame
def test_enhanced_ct_matches_highdicom(same_volume):
    hd = pytest.importorskip("highdicom")
    path = pydicom_file("eCT_Supplemental.dcm")
    image = load(path)
    assert image.meta["DicomVariant"] == "enhanced" and tuple(image.shape) == (512, 512, 2)
    volume = hd.imread(path).get_volume()
    same_volume(image, np.asarray(volume.array, dtype=np.float32), volume.affine)  # highdicom applies rescaling too


def test_enhanced_mr_matches_highdicom_and_nibabel(tmp_path, same_volume):
    """Philips enhanced MR (nibabel's test file), its first 24 of 176 frames, zeroed pixels replaced by distinct values.

    Voxels against highdicom (which applies the frames' PixelValueTransformation as we do); geometry against
    nibabel too (nibabel scales Philips values otherwise)."""
    hd = pytest.importorskip("highdicom")
    from nibabel.nicom import dicomwrappers

    path = nibabel_file("philips_mprage", tmp_path / "src")
    ds = pydicom.dcmread(path)
    frames = 24
    del ds.PerFrameFunctionalGroupsSequence[frames:]
    ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(frames * 256 * 256) % 4093).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "mprage.dcm")
    image = load(tmp_path / "mprage.dcm")
    assert tuple(image.shape) == (256, 256, frames)
    volume = hd.imread(tmp_path / "mprage.dcm").get_volume()
    same_volume(image, np.asarray(volume.array, dtype=np.float32), volume.affine)
    wrapper = dicomwrappers.wrapper_from_file(str(tmp_path / "mprage.dcm"))
    same_volume(image, None, wrapper.affine)


@needs_shared
def test_legacy_converted_enhanced_ct_reads_like_its_classic_series(tmp_path):
    """The 3-slice CT converted to one multi-frame file by highdicom: same voxels, same affine."""
    hd = pytest.importorskip("highdicom")
    sources = [pydicom.dcmread(f) for f in sorted(CT_3SLICE.iterdir())]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(sources, hd.UID(), 1, hd.UID(), 1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    ours, classic = load(tmp_path / "enhanced.dcm"), load(CT_3SLICE)
    assert ours.meta["DicomVariant"] == "enhanced"
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(classic))
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(classic.affine), atol=1e-6)


def test_enhanced_frame_without_plane_position_is_refused(tmp_path):
    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    ds.save_as(tmp_path / "damaged.dcm")
    with pytest.raises(ValueError, match=r"damaged\.dcm \(frame 2\).*without PlanePositionSequence"):
        load(tmp_path / "damaged.dcm")


# ---------------------------------------------------------------------------------------------- Siemens MOSAIC
def test_mosaic_is_unpacked_like_nibabel(tmp_path, same_volume):
    """A Siemens DWI mosaic (nibabel's test file, 896x896 = 7x7 tiles of 128x128, 48 slices), distinct values."""
    from nibabel.nicom import dicomwrappers

    ds = pydicom.dcmread(nibabel_file("siemens_dwi_0", tmp_path / "src"))
    ds.PixelData = (np.arange(896 * 896) % 4000).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "mosaic.dcm")
    image = load(tmp_path / "mosaic.dcm")
    assert image.meta["DicomVariant"] == "mosaic" and tuple(image.shape) == (128, 128, 48)
    wrapper = dicomwrappers.wrapper_from_file(str(tmp_path / "mosaic.dcm"))
    same_volume(image, wrapper.get_data(), wrapper.affine)


def test_mosaic_without_csa_header_is_refused(tmp_path):
    ds = pydicom.dcmread(nibabel_file("siemens_dwi_0", tmp_path / "src"))
    del ds[0x0029, 0x1010]
    ds.save_as(tmp_path / "nocsa.dcm")
    with pytest.raises(ValueError, match=r"nocsa\.dcm: a Siemens MOSAIC image whose CSA header"):
        load(tmp_path / "nocsa.dcm")


# ----------------------------------------------------------------------------------------- several acquisitions
def test_diffusion_b_values_split_and_chosen(tmp_path):
    """Two mosaics of one series, b=0 and b=1000, at the same positions."""
    folder = tmp_path / "dwi"
    nibabel_file("siemens_dwi_0", folder)
    nibabel_file("siemens_dwi_1000", folder)
    with pytest.raises(ValueError, match=r"DiffusionBValue=0 \(48 slices\); DiffusionBValue=1000 \(48 slices\)"):
        load(folder)
    image = load(folder, acquisition={"DiffusionBValue": 1000})
    assert tuple(image.shape) == (128, 128, 48)
    with pytest.raises(ValueError, match="no frame matches"):
        load(folder, acquisition={"DiffusionBValue": 500})


@needs_shared
def test_echoes_and_image_types_split_and_chosen(tmp_path):
    """The 3-slice CT written three times: echo 1 and 2 (magnitude), echo 2 phase; picked by attribute values."""
    folder = tmp_path / "multi"
    folder.mkdir()
    for f in sorted(CT_3SLICE.iterdir()):
        for echo, kind, offset in ((1, "M", 0), (2, "M", 10), (2, "P", 20)):
            ds = pydicom.dcmread(f)
            ds.EchoNumbers = echo
            ds.ImageType = ["ORIGINAL", "PRIMARY", kind]
            ds.AcquisitionNumber = int(ds.InstanceNumber)  # differs per slice: tells nothing apart here
            ds.RescaleIntercept = float(ds.RescaleIntercept) + offset
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / f"{echo}{kind}_{f.name}")
    with pytest.raises(ValueError, match="3 acquisitions") as err:
        load(folder)
    message = str(err.value)
    assert "told apart by EchoNumbers, ImageType" in message and "AcquisitionNumber=" not in message
    assert message.count("(3 slices)") == 3
    base = np.asarray(load(CT_3SLICE))
    phase = load(folder, acquisition={"EchoNumbers": 2, "ImageType": "ORIGINAL\\PRIMARY\\P"})
    np.testing.assert_array_equal(np.asarray(phase), base + 20)
    with pytest.raises(ValueError, match="2 acquisitions"):  # echo 2 still holds magnitude and phase
        load(folder, acquisition={"EchoNumbers": 2})
    with pytest.raises(ValueError, match="acquisition must name"):
        load(folder, acquisition={"Echo": 2})


# --------------------------------------------------------------------------------------------------- RT Dose
def test_rt_dose_is_scaled_by_dose_grid_scaling(same_volume, sitk_volume):
    path = pydicom_file("rtdose.dcm")
    image = load(path)
    ds = pydicom.dcmread(path)
    assert image.meta["DicomVariant"] == "rtdose" and image.meta["DoseUnits"] == ds.DoseUnits
    stored, affine = sitk_volume(path)  # SimpleITK keeps the stored integers
    same_volume(image, (stored * float(ds.DoseGridScaling)).astype(np.float32), affine)
    assert 0.5 < float(image.max()) < 2.0


def test_rt_dose_without_scaling_is_refused(tmp_path):
    ds = pydicom.dcmread(pydicom_file("rtdose.dcm"))
    del ds.DoseGridScaling
    ds.save_as(tmp_path / "noscale.dcm")
    with pytest.raises(ValueError, match=r"noscale\.dcm: RT Dose needs DoseGridScaling"):
        load(tmp_path / "noscale.dcm")


def test_enhanced_time_points_split_by_frame_content(tmp_path):
    """eCT_Supplemental's two frames placed at one position as two time points: split, then one chosen."""
    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    frames = ds.PerFrameFunctionalGroupsSequence
    frames[1].PlanePositionSequence[0].ImagePositionPatient = list(
        frames[0].PlanePositionSequence[0].ImagePositionPatient
    )
    for i, item in enumerate(frames):
        item.FrameContentSequence[0].TemporalPositionIndex = i + 1
    ds.save_as(tmp_path / "time.dcm")
    with pytest.raises(ValueError, match=r"TemporalPositionIndex=1 \(1 slices\); TemporalPositionIndex=2 \(1 slices\)"):
        load(tmp_path / "time.dcm")
    second = load(tmp_path / "time.dcm", acquisition={"TemporalPositionIndex": 2})
    expected = ds.pixel_array[1] * float(
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope
    )
    expected += float(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept)
    np.testing.assert_array_equal(np.asarray(second)[..., 0].T, expected)
