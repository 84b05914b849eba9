"""TiffStackReader on multi-page TIFFs written here, and the ISBI 2012 PNG sections through MONAI's reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImage
from PIL import Image

from unet_monai.io import StrictLoadImaged, TiffStackReader

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012" / "train"


def write_stack(path: Path, pages: list[np.ndarray]) -> Path:
    images = [Image.fromarray(p) for p in pages]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def test_stack_reads_every_page_in_order_with_spacing(tmp_path):
    pages = [np.full((6, 4), i, dtype=np.uint8) for i in range(5)]
    pages[2][1, 3] = 200  # row 1, column 3 of page 2
    path = write_stack(tmp_path / "train-volume.tif", pages)
    image = LoadImage(image_only=True)(str(path), reader=TiffStackReader(spacing=(4e-6, 4e-6, 5e-5)))
    assert tuple(image.shape) == (4, 6, 5)  # (columns, rows, pages)
    assert [int(image[0, 0, k]) for k in range(5)] == [0, 1, 2, 3, 4]
    assert int(image[3, 1, 2]) == 200
    np.testing.assert_allclose(np.diag(np.asarray(image.affine))[:3], (4e-6, 4e-6, 5e-5))


def test_single_page_is_2d_like_a_png(tmp_path):
    path = write_stack(tmp_path / "one.tiff", [np.arange(12, dtype=np.uint8).reshape(3, 4)])
    image = LoadImage(image_only=True)(str(path), reader=TiffStackReader())
    assert tuple(image.shape) == (4, 3)
    assert int(image[1, 2]) == 9  # row 2, column 1


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="broken.tif"):
        TiffStackReader().read(tmp_path / "broken.tif")
    with pytest.raises(FileNotFoundError, match="absent.tif"):
        TiffStackReader().read(tmp_path / "absent.tif")
    mixed = [Image.fromarray(np.zeros((4, 4), np.uint8)), Image.fromarray(np.zeros((5, 4), np.uint8))]
    mixed[0].save(tmp_path / "mixed.tif", save_all=True, append_images=mixed[1:])
    with pytest.raises(ValueError, match="one size"):
        TiffStackReader().read(tmp_path / "mixed.tif")
    with pytest.raises(ValueError, match="spacing"):
        TiffStackReader(spacing=(1.0,))


def test_strict_loader_reads_tiff_labels(tmp_path):
    path = write_stack(tmp_path / "labels.tif", [np.array([[0, 255]], dtype=np.uint8)] * 2)
    loaded = StrictLoadImaged("label", reader=TiffStackReader(), image_only=True)({"label": str(path)})
    assert tuple(loaded["label"].shape) == (2, 1, 2)
    assert set(np.unique(np.asarray(loaded["label"])).tolist()) == {0, 255}


@pytest.mark.skipif(not ISBI.is_dir(), reason=f"shared ISBI 2012 data not found at {ISBI}")
def test_isbi_sections_load_as_512_squares_with_binary_labels():
    image = LoadImage(image_only=True)(str(ISBI / "image" / "0.png"))
    label = LoadImage(image_only=True)(str(ISBI / "label" / "0.png"))
    assert tuple(image.shape) == tuple(label.shape) == (512, 512)
    assert set(np.unique(np.asarray(label)).tolist()) <= {0, 255}
    membrane = float((np.asarray(label) == 0).mean())
    assert 0.1 < membrane < 0.4  # SOURCE.md: the membrane is about 22 % of the pixels
