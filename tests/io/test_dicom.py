"""DicomSeriesReader on the real series in ../shared/data, against SimpleITK, and on damaged copies of them."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage

from unet_monai.io import DicomSeriesReader, StrictLoadImaged, find_dicom_series

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CT_J2K = DATA / "totalsegmentator-examples" / "example_ct_dicom"
CT_3SLICE = DATA / "dcmqi-ct-seg" / "ct-3slice"

pytestmark = pytest.mark.skipif(
    not CT_J2K.is_dir() or not CT_3SLICE.is_dir(),
    reason=f"shared DICOM data not found at {DATA} (expected ../shared/data beside the repository)",
)


def load(folder: Path, **kwargs) -> object:
    """LoadImage with our reader as the runtime reader: its errors come through unchanged."""
    return LoadImage(image_only=True)(str(folder), reader=DicomSeriesReader(**kwargs))


def copy_series(source: Path, target: Path, names: list[str] | None = None) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(source.iterdir())
    copies = []
    for i, f in enumerate(files):
        dest = target / (names[i] if names else f.name)
        shutil.copyfile(f, dest)
        copies.append(dest)
    return copies


def sitk_volume(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def test_jpeg2000_series_matches_simpleitk():
    """The compressed 20-slice CT: spacing from positions (2 mm, not SliceThickness 3 mm), same HU, same geometry."""
    image = load(CT_J2K)
    assert tuple(image.shape) == (512, 512, 20)
    np.testing.assert_allclose(image.meta["spacing"], (0.9765625, 0.9765625, 2.0), atol=1e-6)
    reference = sitk_volume(CT_J2K)
    expected = np.transpose(sitk.GetArrayFromImage(reference), (2, 1, 0))  # (z, y, x) -> (x, y, z)
    np.testing.assert_array_equal(np.asarray(image), expected.astype(np.float32))
    np.testing.assert_allclose(np.asarray(image.affine), sitk_affine_ras(reference), atol=1e-4)
    assert image.meta["Modality"] == "CT"
    assert float(image.min()) == -1024.0  # RescaleIntercept applied


def test_file_order_does_not_matter(tmp_path):
    names = [f"slice_{i:02d}.dcm" for i in range(20)]
    random.Random(0).shuffle(names)
    copy_series(CT_J2K, tmp_path / "shuffled", names)
    shuffled, original = load(tmp_path / "shuffled"), load(CT_J2K)
    np.testing.assert_array_equal(np.asarray(shuffled), np.asarray(original))
    np.testing.assert_allclose(np.asarray(shuffled.affine), np.asarray(original.affine))


def test_stray_files_are_ignored(tmp_path):
    folder = tmp_path / "series"
    copy_series(CT_3SLICE, folder)
    (folder / "README.txt").write_text("notes from the scanner room")
    (folder / "thumbnail.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "empty.dcm").write_bytes(b"")
    shutil.copyfile(DATA / "dcmqi-ct-seg" / "liver.dcm", folder / "seg.dcm")  # a SEG is not an image slice
    image = load(folder)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(load(CT_3SLICE)))
    np.testing.assert_allclose(image.meta["spacing"], (0.810547, 0.810547, 1.0), atol=1e-5)


def test_two_series_are_listed_and_can_be_chosen(tmp_path):
    folder = tmp_path / "mixed"
    copy_series(CT_J2K, folder)
    copy_series(CT_3SLICE, folder, ["a.dcm", "b.dcm", "c.dcm"])
    series = find_dicom_series(folder)
    assert sorted(len(s.files) for s in series.values()) == [3, 20]
    with pytest.raises(ValueError, match="2 matching series") as err:
        load(folder)
    for uid in series:
        assert uid in str(err.value)
    small = next(uid for uid, s in series.items() if len(s.files) == 3)
    assert load(folder, series_uid=small).shape[-1] == 3
    assert load(folder, select="most_slices").shape[-1] == 20
    assert load(folder, description="CT Body").shape[-1] == 20
    with pytest.raises(ValueError, match="no series matches"):
        load(folder, modality="MR")


def test_missing_slice_is_an_error_or_resampled(tmp_path):
    folder = tmp_path / "gap"
    files = copy_series(CT_3SLICE, folder)
    ordered = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    # 3 slices 1 mm apart; add a fourth 2 mm beyond the end: one slice missing in between
    extra = pydicom.dcmread(ordered[-1])
    extra.ImagePositionPatient[2] = float(extra.ImagePositionPatient[2]) + 2.0
    extra.SOPInstanceUID = pydicom.uid.generate_uid()
    extra.save_as(folder / "extra.dcm")
    with pytest.raises(ValueError, match="missing slice"):
        load(folder)
    image = load(folder, on_irregular_spacing="resample")
    assert image.shape[-1] == 5
    np.testing.assert_allclose(image.meta["spacing"][2], 1.0, atol=1e-6)
    top, interpolated = np.asarray(image)[..., 2], np.asarray(image)[..., 3]
    np.testing.assert_allclose(interpolated, top, atol=1e-3)  # halfway between two copies of the same pixels


def test_strict_loader_does_not_fall_back_to_monai_readers(tmp_path):
    """In a dict pipeline, a refused folder stays refused (MONAI's loader would read it with ITKReader)."""
    folder = tmp_path / "mixed"
    copy_series(CT_J2K, folder)
    copy_series(CT_3SLICE, folder, ["a.dcm", "b.dcm", "c.dcm"])
    with pytest.raises(RuntimeError, match="2 matching series"):
        StrictLoadImaged("image", reader=DicomSeriesReader(), image_only=True)({"image": str(folder)})
    loaded = StrictLoadImaged("image", reader=DicomSeriesReader(select="most_slices"), image_only=True)(
        {"image": str(folder)}
    )
    assert loaded["image"].shape == (512, 512, 20)


def test_mixed_orientation_is_an_error(tmp_path):
    folder = tmp_path / "tilted"
    files = copy_series(CT_3SLICE, folder)
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.98, 0.2]
    ds.save_as(files[1])
    with pytest.raises(ValueError, match="mixed orientations"):
        load(folder)


def test_gantry_tilt_is_detected(tmp_path):
    folder = tmp_path / "gantry"
    files = copy_series(CT_3SLICE, folder)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + 0.5 * float(ds.ImagePositionPatient[2])
        ds.save_as(f)
    with pytest.raises(ValueError, match="gantry tilt"):
        load(folder)
    image = load(folder, allow_gantry_tilt=True)
    assert abs(float(image.affine[1, 2])) > 0.4  # the slice axis keeps its y shear (sign flipped by RAS)


def test_undecodable_pixels_name_the_file(tmp_path):
    folder = tmp_path / "jpegls"
    files = copy_series(CT_3SLICE, folder)
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLSLossless  # claims JPEG-LS; the bytes are raw
    ds.PixelData = pydicom.encaps.encapsulate([bytes(ds.PixelData)[:1000]])
    ds.save_as(files[0], enforce_file_format=True)
    with pytest.raises(RuntimeError, match=files[0].name):
        load(folder)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM image series"):
        load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DicomSeriesReader().choose_series(tmp_path / "absent")


def test_reader_argument_checks():
    with pytest.raises(ValueError, match="select"):
        DicomSeriesReader(select="first")
    with pytest.raises(ValueError, match="on_irregular_spacing"):
        DicomSeriesReader(on_irregular_spacing="ignore")


def test_nifti_label_of_a_dicom_series_lines_up_in_world_coordinates(tmp_path):
    """A label map saved with the series' affine puts each voxel where SimpleITK puts that DICOM pixel."""
    from monai.transforms import SaveImage

    from unet_monai.io import AtomicNibabelWriter

    image = load(CT_J2K)
    label = (image > 100).to(dtype=image.dtype)  # bright voxels: contrast-filled vessels, bone
    SaveImage(
        output_dir=str(tmp_path),
        output_postfix="seg",
        separate_folder=False,
        writer=AtomicNibabelWriter,
        output_dtype=np.uint8,
        print_log=False,
    )(label[None])
    written = next(tmp_path.glob("*.nii.gz"))
    nifti = LoadImage(image_only=True)(str(written))
    np.testing.assert_allclose(np.asarray(nifti.affine), np.asarray(image.affine), atol=1e-5)
    reference = sitk_volume(CT_J2K)
    for index in [(0, 0, 0), (100, 300, 7), (511, 12, 19)]:
        world_lps = np.asarray(reference.TransformIndexToPhysicalPoint(index))
        world_ras = np.asarray(nifti.affine)[:3] @ np.array([*index, 1.0])
        np.testing.assert_allclose(world_ras, world_lps * np.array([-1.0, -1.0, 1.0]), atol=1e-3)
        hu = sitk.GetArrayFromImage(reference)[index[2], index[1], index[0]]
        assert int(np.asarray(nifti)[index]) == int(hu > 100)
