"""Bad inputs give an error that names the file and the problem: NIfTI, DICOM folders, PNG, datalists.

The loading chain is the one the bundle uses: ``StrictLoadImaged`` -> ``EnsureChannelFirstd`` -> ``CheckImaged``,
called one transform at a time so that the error itself is checked (``Compose`` wraps it in a ``RuntimeError``
whose cause it is; see ``test_compose_keeps_the_message_as_the_cause``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import Compose, EnsureChannelFirstd
from PIL import Image

from unet_monai.io import DicomSeriesReader, StrictLoadImaged, TiffStackReader, load_manifest
from unet_monai.transforms import CheckImaged

READERS = [DicomSeriesReader(), TiffStackReader(), "PILReader", "NibabelReader"]  # inference.json's list


def load(data: dict, spatial_dims: int = 3, channels: int = 1) -> dict:
    """The bundle's loading chain on ``data``, one transform at a time."""
    keys = list(data)
    for transform in (
        StrictLoadImaged(keys, reader=READERS, image_only=True),
        EnsureChannelFirstd(keys),
        CheckImaged(keys, spatial_dims=spatial_dims, channels=channels),
    ):
        data = transform(data)
    return data


def raises(error: type[Exception], *patterns: str | Path) -> pytest.RaisesExc:
    """``pytest.raises`` whose message must contain every pattern (file names as literal text)."""
    regex = "".join(f"(?=.*{re.escape(str(p)) if isinstance(p, Path) else p})" for p in patterns)
    return pytest.raises(error, match=re.compile(regex, re.DOTALL))


def volume(shape: tuple[int, ...] = (12, 10, 6), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# ---------------------------------------------------------------- NIfTI


def test_a_good_volume_passes(nifti_file: Callable[..., Path]) -> None:
    image, label = nifti_file("a.nii.gz", volume()), nifti_file("a_seg.nii.gz", (volume() > 0.5).astype(np.uint8))
    out = load({"image": str(image), "label": str(label)})
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 12, 10, 6)


def test_truncated_gzip(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("cut.nii.gz", volume())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with raises(ValueError, path, "truncated or corrupt gzip"):
        load({"image": str(path)})


def test_corrupt_byte_in_gzip_is_caught_by_the_checksum(nifti_file: Callable[..., Path]) -> None:
    """nibabel alone reads this file without an error (wrong voxels): it never reaches the CRC."""
    path = nifti_file("flip.nii.gz", volume())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with raises(ValueError, path, "CRC check failed"):
        load({"image": str(path)})


def test_corrupt_header(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("garbage.nii", volume())
    data = path.read_bytes()
    path.write_bytes(data[:344] + b"abcd" + data[348:])  # the magic "n+1": not a NIfTI header
    with raises(RuntimeError, "cannot read image file", path, "NibabelReader"):
        load({"image": str(path)})


def test_uncompressed_file_shorter_than_its_header_says(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("short.nii", volume())
    path.write_bytes(path.read_bytes()[:600])
    with raises(RuntimeError, "cannot read image file", path):
        load({"image": str(path)})


@pytest.mark.parametrize("value, found", [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")])
def test_nan_or_inf_voxels(nifti_file: Callable[..., Path], value: float, found: str) -> None:
    array = volume()
    array[3, 4, 5] = value
    path = nifti_file("nan.nii.gz", array)
    with raises(ValueError, path, "must hold finite values", found):
        load({"image": str(path)})


def test_4d_where_3d_is_expected(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("timeseries.nii.gz", volume((12, 10, 6, 5)))
    with raises(ValueError, path, r"must have 1 channel\(s\), got 5", "4D file"):
        load({"image": str(path)})


def test_2d_where_3d_is_expected(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("slice.nii.gz", volume((12, 10)))
    with raises(ValueError, path, r"must be 3D with channels first, \(C, X, Y, Z\), got shape \(1, 12, 10\)"):
        load({"image": str(path)})


def test_zero_length_dimension(nifti_file: Callable[..., Path]) -> None:
    path = nifti_file("empty.nii.gz", np.zeros((12, 0, 6), np.float32))
    with raises(ValueError, path, "holds no voxels", r"spatial shape in the header \(12, 0, 6\)"):
        load({"image": str(path)})


def test_image_and_label_of_different_shapes(nifti_file: Callable[..., Path]) -> None:
    image, label = nifti_file("a.nii.gz", volume()), nifti_file("b.nii.gz", np.zeros((12, 10, 5), np.uint8))
    with raises(ValueError, image, label, "must have one spatial shape", r"\(12, 10, 5\) and \(12, 10, 6\)"):
        load({"image": str(image), "label": str(label)})


def test_image_and_label_with_different_affines(nifti_file: Callable[..., Path]) -> None:
    shifted = np.eye(4)
    shifted[0, 3] = 2.0  # two voxels along x
    image = nifti_file("a.nii.gz", volume())
    label = nifti_file("b.nii.gz", np.zeros((12, 10, 6), np.uint8), affine=shifted)
    with raises(ValueError, image, label, "must lie on one grid", "differ by up to 2"):
        load({"image": str(image), "label": str(label)})


def test_missing_file(tmp_path: Path) -> None:
    with raises(FileNotFoundError, tmp_path / "absent.nii.gz", "does not exist"):
        load({"image": str(tmp_path / "absent.nii.gz")})


def test_compose_keeps_the_message_as_the_cause(nifti_file: Callable[..., Path]) -> None:
    """In the bundle, MONAI's Compose wraps the error; the CLI prints the cause (ours) first."""
    path = nifti_file("cut.nii.gz", volume())
    path.write_bytes(path.read_bytes()[:100])
    chain = Compose([StrictLoadImaged("image", reader=READERS), EnsureChannelFirstd("image")])
    with pytest.raises(RuntimeError) as err:
        chain({"image": str(path)})
    assert isinstance(err.value.__cause__, ValueError) and str(path) in str(err.value.__cause__)


# ---------------------------------------------------------------- DICOM


@pytest.fixture
def load_dicom(phi: dict[str, str]) -> Callable[[Path], None]:
    """Load a DICOM folder that must fail; the error must not carry the patient data, and is raised again."""

    def run(folder: Path) -> None:
        with pytest.raises(Exception) as err:
            load({"image": str(folder)})
        for value in phi.values():
            assert value not in str(err.value)
        raise err.value

    return run


def test_a_good_series_passes(tmp_path: Path, dicom_series: Callable[..., list[Path]]) -> None:
    dicom_series(tmp_path / "ct")
    assert tuple(load({"image": str(tmp_path / "ct")})["image"].shape) == (1, 10, 12, 4)


def test_mixed_series(tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable) -> None:
    dicom_series(tmp_path / "ct", description="first")
    dicom_series(tmp_path / "ct", description="second")
    with raises(RuntimeError, tmp_path / "ct", "holds 2 matching series", "'first'", "'second'"):
        load_dicom(tmp_path / "ct")


def test_missing_slice(tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable) -> None:
    files = dicom_series(tmp_path / "ct", slices=5)
    files[2].unlink()
    with raises(RuntimeError, tmp_path / "ct", "about 1 missing slice", files[1], files[3]):
        load_dicom(tmp_path / "ct")


def test_inconsistent_orientation(
    tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable
) -> None:
    files = dicom_series(tmp_path / "ct")
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    ds.save_as(files[2])
    with raises(RuntimeError, files[2], "mixed orientations"):
        load_dicom(tmp_path / "ct")


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2.4.80", "1.2.3.4.5.6.7"],
    ids=["jpeg-ls-without-its-bytes", "unknown-transfer-syntax"],
)
def test_unsupported_transfer_syntax(
    tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable, syntax: str
) -> None:
    files = dicom_series(tmp_path / "ct")
    ds = pydicom.dcmread(files[1])
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = pydicom.encaps.encapsulate([bytes(ds.PixelData)])
    ds.save_as(files[1], enforce_file_format=True)
    with raises(RuntimeError, files[1], "cannot decode the pixels", syntax):
        load_dicom(tmp_path / "ct")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda ds: delattr(ds, "PixelSpacing"), "PixelSpacing must be 2 number.*missing"),
        (lambda ds: delattr(ds, "Rows"), "Rows must be 1 number"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]), "ImageOrientationPatient must be 6"),
        (lambda ds: setattr(ds, "ImageOrientationPatient", [0] * 6), "two orthogonal unit vectors"),
        (lambda ds: setattr(ds, "RescaleSlope", 1e40), "beyond float32 range"),
        (lambda ds: setattr(ds, "NumberOfFrames", 2), "(?:pixels|single-frame)"),
    ],
    ids=["no-pixel-spacing", "no-rows", "orientation-of-5", "zero-orientation", "slope-overflow", "two-frames"],
)
def test_damaged_header(
    tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable, damage: Callable, message: str
) -> None:
    files = dicom_series(tmp_path / "ct")
    ds = pydicom.dcmread(files[1])
    damage(ds)
    ds.save_as(files[1])
    with raises(RuntimeError, files[1], message):
        load_dicom(tmp_path / "ct")


def test_truncated_dicom_file(tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable) -> None:
    files = dicom_series(tmp_path / "ct")
    files[3].write_bytes(files[3].read_bytes()[:-100])
    with raises(RuntimeError, files[3], "cannot decode the pixels"):
        load_dicom(tmp_path / "ct")


def test_unreadable_dicom_header(tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom: Callable) -> None:
    """A file with the DICOM marker whose header breaks off is an error, not silently one slice fewer."""
    files = dicom_series(tmp_path / "ct")
    files[0].write_bytes(files[0].read_bytes()[:300])
    with raises(RuntimeError, files[0], "CT Image Storage file without SeriesInstanceUID", "truncated or damaged"):
        load_dicom(tmp_path / "ct")


def test_dicom_file_with_a_broken_element(tmp_path: Path, dicom_series: Callable[..., list[Path]], load_dicom) -> None:
    files = dicom_series(tmp_path / "ct")
    data = files[2].read_bytes()
    at = data.index(b"\x20\x00\x32\x00")  # ImagePositionPatient (0020,0032): give it a length past the end of file
    files[2].write_bytes(data[: at + 6] + b"\xff\xff" + data[at + 8 :])
    with raises(RuntimeError, files[2], "(?:header cannot be read|truncated or damaged)"):
        load_dicom(tmp_path / "ct")


# ---------------------------------------------------------------- PNG


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_png_of_an_unexpected_mode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.png"
    Image.fromarray((volume((20, 30)) * 255).astype(np.uint8)).convert(mode).save(path)
    with raises(ValueError, path, f"'{mode}'"):
        load({"image": str(path)}, spatial_dims=2)


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_grayscale_png_passes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "gray.png"
    array = (volume((20, 30)) * 255).astype(np.uint8 if mode == "L" else np.uint16)
    Image.fromarray(array).save(path)
    assert tuple(load({"image": str(path)}, spatial_dims=2)["image"].shape) == (1, 30, 20)


def test_palette_label_can_be_allowed(tmp_path: Path) -> None:
    path = tmp_path / "label.png"
    Image.fromarray(np.eye(8, dtype=np.uint8)).convert("P").save(path)
    loaded = StrictLoadImaged("label", reader="PILReader")({"label": str(path)})
    checked = CheckImaged("label", spatial_dims=2, pil_modes=["L", "P"])(EnsureChannelFirstd("label")(loaded))
    assert tuple(checked["label"].shape) == (1, 8, 8)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray((volume((64, 64)) * 255).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with raises(RuntimeError, "cannot read image file", path, "PILReader"):
        load({"image": str(path)}, spatial_dims=2)


# ---------------------------------------------------------------- datalists


def write_manifest(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_datalist_naming_a_missing_file(nifti_file: Callable[..., Path], tmp_path: Path) -> None:
    nifti_file("images/a.nii.gz", volume())
    manifest = write_manifest(tmp_path / "m.json", {"test": ["images/a.nii.gz", "images/gone.nii.gz"]})
    with raises(FileNotFoundError, manifest, r"test\[1\] image", tmp_path / "images" / "gone.nii.gz"):
        load_manifest(manifest, "test")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image": 3, "label": "b"}, "image must be a file path"),
        ({"image": [], "label": "b"}, "image must be a file path or a non-empty list"),
        ({"image": "a", "label": {"x": 1}}, "label must be a file path"),
        ({"image": "a", "label": "b", "case_id": "../../x"}, "case_id must be a plain name"),
        ({"image": "a", "label": "b", "case_id": ["x"]}, "case_id must be a plain name"),
    ],
    ids=["number", "empty-list", "dict", "case-id-traversal", "case-id-list"],
)
def test_datalist_entries_of_the_wrong_form(tmp_path: Path, entry: dict, message: str) -> None:
    manifest = write_manifest(tmp_path / "m.json", {"training": [entry]})
    with raises(ValueError, manifest, r"training\[0\]", message):
        load_manifest(manifest, check_files=False)


def test_test_split_mixing_paths_and_dicts(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.json", {"test": [{"image": "a.nii.gz"}, "b.nii.gz"]})
    with raises(ValueError, manifest, "only paths or only dicts"):
        load_manifest(manifest, "test", check_files=False)


def test_datalist_that_is_not_utf8(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_bytes(b'{"training": ["\xff"]}')
    with raises(ValueError, manifest, "not UTF-8"):
        load_manifest(manifest)


def test_case_id_stays_a_name_even_when_a_file_has_that_name(tmp_path: Path) -> None:
    """MONAI's datalist loader turns any value naming an existing file into a path; case_id keeps its text."""
    for name in ("a.nii.gz", "b.nii.gz", "case1"):
        (tmp_path / name).write_bytes(b"")
    manifest = write_manifest(
        tmp_path / "m.json", {"training": [{"image": "a.nii.gz", "label": "b.nii.gz", "case_id": "case1"}]}
    )
    assert load_manifest(manifest)[0]["case_id"] == "case1"
