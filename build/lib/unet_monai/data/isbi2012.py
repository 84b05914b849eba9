"""Write the ISBI 2012 challenge stacks (``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``) as the
one-PNG-per-section layout that ``data_manifests/isbi2012.json`` names.

    python -m unet_monai.data.isbi2012 train-volume.tif train-labels.tif /path/to/isbi2012 [--test test-volume.tif]

writes ``train/image/N.png`` and ``train/label/N.png`` (N = 0..29) and ``test/N.png``; then train with
``--data_root /path/to/isbi2012``. Pixels are copied unchanged (8-bit; labels 255 = cell, 0 = membrane).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from unet_monai.io.atomic import atomic_path
from unet_monai.io.tiff import TiffStackReader

__all__ = ["write_isbi2012_sections"]


def _sections(path: str | os.PathLike) -> np.ndarray:
    """The pages of a TIFF stack as ``(pages, rows, columns)`` uint8."""
    reader = TiffStackReader()
    array, _ = reader.get_data(reader.read(path))
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: ISBI 2012 stacks are 8-bit, found {array.dtype}.")
    return np.moveaxis(np.swapaxes(array, 0, 1), -1, 0)  # (columns, rows, pages) -> (pages, rows, columns)


def _write_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_isbi2012_sections(
    volume: str | os.PathLike,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    test_volume: str | os.PathLike | None = None,
) -> int:
    """Write every section of the training stacks (and of the test stack, if given) as PNG files.

    Args:
        volume: ``train-volume.tif``, a multi-page 8-bit TIFF.
        labels: ``train-labels.tif``, the same number of pages of the same size.
        out_dir: the data root to create (``train/image``, ``train/label``, ``test``).
        test_volume: ``test-volume.tif``, optional.

    Returns:
        The number of training sections written.

    Raises:
        ValueError: a stack is not 8-bit, or the two training stacks differ in page count or size.
    """
    images, masks = _sections(volume), _sections(labels)
    if images.shape != masks.shape:
        raise ValueError(
            f"{volume} has {images.shape[0]} sections of {images.shape[1:]} but {labels} has "
            f"{masks.shape[0]} of {masks.shape[1:]}: they must match."
        )
    out = Path(out_dir)
    for i, (image, mask) in enumerate(zip(images, masks)):
        _write_png(image, out / "train" / "image" / f"{i}.png")
        _write_png(mask, out / "train" / "label" / f"{i}.png")
    if test_volume is not None:
        for i, image in enumerate(_sections(test_volume)):
            _write_png(image, out / "test" / f"{i}.png")
    return len(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m unet_monai.data.isbi2012")
    parser.add_argument("volume", help="train-volume.tif")
    parser.add_argument("labels", help="train-labels.tif")
    parser.add_argument("out_dir", help="data root to write (train/image/N.png, train/label/N.png, test/N.png)")
    parser.add_argument("--test", dest="test_volume", default=None, help="test-volume.tif (optional)")
    args = parser.parse_args(argv)
    count = write_isbi2012_sections(args.volume, args.labels, args.out_dir, args.test_volume)
    print(f"wrote {count} training sections to {args.out_dir}")


if __name__ == "__main__":
    main()
