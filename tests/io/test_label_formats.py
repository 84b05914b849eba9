"""SaveLabelsd writes each label map in its input's format: PNG in, PNG out and TIFF in, TIFF out, in the input
file's own rows and columns; NIfTI in, NIfTI out with the input's affine. Real files, loaded as inference does."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import ImageReader
from monai.transforms import EnsureChannelFirstd, LoadImaged
from PIL import Image, ImageSequence

from unet_monai.io import SaveLabelsd, TiffStackReader, label_suffix

# asymmetric positions (row, column[, page]) with distinct intensities: a transposed or flipped label misses them
SPOTS_2D = {(2, 40): 200, (30, 3): 100, (36, 52): 150}
SPOTS_3D = {(2, 40, 0): 200, (30, 3, 2): 100, (36, 52, 1): 150}


def to_label(image: torch.Tensor) -> torch.Tensor:
    """Class indices from intensities, keeping the image's metadata: 0 below 100, 1 in [100, 200), 2 from 200."""
    return (image >= 100).to(torch.float32) + (image >= 200).to(torch.float32)


def expected_label(array: np.ndarray) -> np.ndarray:
    return (array >= 100).astype(np.uint8) + (array >= 200).astype(np.uint8)


def load(path: Path, reader: str | ImageReader) -> torch.Tensor:
    """The bundle's load stage: LoadImaged with the reader, then EnsureChannelFirstd."""
    loader = LoadImaged("image", reader=reader, image_only=True)  # type: ignore[arg-type]  # MONAI takes instances
    loaded = loader({"image": str(path)})
    return EnsureChannelFirstd("image")(loaded)["image"]


def read_pages(path: Path) -> np.ndarray:
    """A TIFF's pages through Pillow, as ``(rows, columns[, pages])``."""
    with Image.open(path) as image:
        pages = [np.asarray(page) for page in ImageSequence.Iterator(image)]
    return pages[0] if len(pages) == 1 else np.stack(pages, axis=-1)


def test_png_input_gets_a_png_label_in_its_own_rows_and_columns(tmp_path: Path) -> None:
    array = np.zeros((37, 53), dtype=np.uint8)  # rows x columns, not square
    for spot, value in SPOTS_2D.items():
        array[spot] = value
    Image.fromarray(array).save(tmp_path / "cells.png")
    image = load(tmp_path / "cells.png", "PILReader")
    assert image.shape == (1, 53, 37)  # MONAI's PILReader transposes (reverse_indexing)

    SaveLabelsd("pred", output_dir=tmp_path / "out", output_postfix="seg")({"pred": to_label(image)})

    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cells_seg.png"]
    with Image.open(tmp_path / "out" / "cells_seg.png") as written:
        assert written.format == "PNG" and written.mode == "L"
        label = np.asarray(written)
    assert label.shape == array.shape and label.dtype == np.uint8
    assert {spot: int(label[spot]) for spot in SPOTS_2D} == {(2, 40): 2, (30, 3): 1, (36, 52): 1}
    np.testing.assert_array_equal(label, expected_label(array))


@pytest.mark.parametrize("pages", [1, 3], ids=["2d", "3d"])
def test_tiff_input_gets_a_tiff_label_in_its_own_layout(tmp_path: Path, pages: int) -> None:
    stack = np.zeros((37, 53, pages), dtype=np.uint8)  # rows x columns x pages
    for (row, col, page), value in SPOTS_3D.items():
        stack[row, col, min(page, pages - 1)] = value
    frames = [Image.fromarray(stack[..., z]) for z in range(pages)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    array = stack[..., 0] if pages == 1 else stack
    image = load(tmp_path / "stack.tif", TiffStackReader())
    assert image.shape == (1, 53, 37, *([pages] if pages > 1 else []))  # columns, rows[, pages]

    SaveLabelsd("pred", output_dir=tmp_path / "out")({"pred": to_label(image)})

    written = tmp_path / "out" / "stack_seg.tif"
    with Image.open(written) as tiff:
        assert tiff.format == "TIFF" and getattr(tiff, "n_frames", 1) == pages
    label = read_pages(written)
    assert label.shape == array.shape and label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected_label(array))
    if pages == 3:
        assert [int(label[spot]) for spot in SPOTS_3D] == [2, 1, 1]
    again = load(written, TiffStackReader())  # and our reader reads it back onto the image's grid
    np.testing.assert_array_equal(np.asarray(again), np.asarray(to_label(image)))


def test_nifti_input_keeps_a_nifti_label_with_its_affine(tmp_path: Path) -> None:
    affine = np.array([[0.0, -0.8, 0.0, 12.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])
    array = np.zeros((37, 53, 3), dtype=np.float32)
    for spot, value in SPOTS_3D.items():
        array[spot] = value
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "ct.nii.gz")
    image = load(tmp_path / "ct.nii.gz", "NibabelReader")

    SaveLabelsd("pred", output_dir=tmp_path / "out")({"pred": to_label(image)})

    written = nib.load(tmp_path / "out" / "ct_seg.nii.gz")
    assert isinstance(written, nib.Nifti1Image)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected_label(array))


@pytest.mark.parametrize(
    ("source", "suffix"),
    [
        ("/d/a.png", ".png"),
        ("/d/A.PNG", ".png"),
        ("/d/a.jpg", ".png"),  # a label is never written lossy
        ("/d/a.tif", ".tif"),
        ("/d/a.TIFF", ".tiff"),
        ("/d/a.nii.gz", ".nii.gz"),
        ("/d/series", ".nii.gz"),  # a DICOM series folder
        ("/d/1.2.840.113619.2.55/", ".nii.gz"),  # a folder named by its UID
        (["/d/t1.png", "/d/t2.png"], ".png"),  # channels of one case: the first file
        (None, ".nii.gz"),
    ],
)
def test_label_suffix_follows_the_input(source: object, suffix: str) -> None:
    assert label_suffix(source) == suffix  # type: ignore[arg-type]


def test_png_label_off_the_input_grid_or_out_of_range_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((37, 53), dtype=np.uint8)).save(tmp_path / "cells.png")
    image = load(tmp_path / "cells.png", "PILReader")
    save = SaveLabelsd("pred", output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"must be on the input's grid \(53, 37\).*got \(52, 37\)"):
        save({"pred": to_label(image)[:, :52]})
    with pytest.raises(ValueError, match=r"must be in \[0, 255\] for uint8, got \[300, 300\]"):
        save({"pred": to_label(image) + 300})
    with pytest.raises(ValueError, match=r"must be \(1, X, Y\[, Z\]\) class indices, got shape \(2, 53, 37\)"):
        save({"pred": torch.cat([to_label(image)] * 2)})
    assert not (tmp_path / "out").exists()  # nothing written for a refused label


@pytest.mark.parametrize("name", ["cells.png", "cells.tif"])
def test_the_bundle_postprocessing_writes_the_input_format(tmp_path: Path, name: str) -> None:
    """inference.json's own load stage and postprocessing (argmax, inversion to the input grid, save_labels), with
    logits made from the image (class 1 from intensity 100): the label file overlays the input file."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    repo = Path(__file__).resolve().parents[2]
    array = np.zeros((37, 53), dtype=np.uint8)
    for spot, value in SPOTS_2D.items():
        array[spot] = value
    Image.fromarray(array).save(tmp_path / name)
    parser = ConfigParser()
    parser.read_config(str(repo / "bundles" / "unet" / "inference.json"))
    parser["bundle_root"] = str(tmp_path)
    parser["output_dir"] = str(tmp_path / "out")
    parser["label_names"] = {1: "cell"}  # not the synthetic data set's manifest
    item = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / name)})
    image = item["image"]
    raw = torch.as_tensor(array.T[None].astype(np.float32))  # (1, columns, rows), as MONAI's readers order axes
    logits = MetaTensor(torch.cat([100 - raw, raw - 99.5]), meta=dict(image.meta))
    parser.get_parsed_content("postprocessing")({"image": image, "pred": logits})

    written = tmp_path / "out" / name.replace(".", "_seg.")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [written.name]
    label = read_pages(written)
    assert label.shape == array.shape
    np.testing.assert_array_equal(label, (array >= 100).astype(np.uint8))
