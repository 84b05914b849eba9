"""Multi-page TIFF stacks (microscopy, the ISBI 2012 ``train-volume.tif`` layout) as a MONAI ``ImageReader``.

Why our own: MONAI's ``PILReader`` reads only the first page of a TIFF, and its other TIFF paths go through
optional ITK or whole-slide readers; a stack of EM sections needs every page and a pixel size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

__all__ = ["TiffStackReader"]

_SUFFIXES = (".tif", ".tiff")


class TiffStackReader(ImageReader):
    """Read a (multi-page) TIFF into ``(X, Y[, Z])``: columns, rows, pages, as MONAI's ``PILReader`` orders axes.

    Args:
        spacing: pixel size per axis ``(x, y[, z])`` for the affine, in the units the pipeline uses (mm by
            the NIfTI convention; for ISBI 2012, 4 x 4 x 50 nm is ``(4e-6, 4e-6, 5e-5)`` mm). Default 1.
    """

    def __init__(self, spacing: Sequence[float] | None = None) -> None:
        super().__init__()
        if spacing is not None and (len(spacing) not in (2, 3) or any(s <= 0 for s in spacing)):
            raise ValueError(f"spacing must be 2 or 3 positive sizes, got {spacing}.")
        self.spacing = spacing

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = filename if isinstance(filename, (list, tuple)) else [filename]
        return len(names) == 1 and str(names[0]).lower().endswith(_SUFFIXES)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
        """All pages of one TIFF file, stacked on the last axis."""
        from PIL import Image, ImageSequence, UnidentifiedImageError

        path = Path(str(data[0] if isinstance(data, (list, tuple)) else data))
        if not path.is_file():
            raise FileNotFoundError(f"TIFF file {path} does not exist.")
        try:
            with Image.open(path) as image:
                pages = [np.asarray(page) for page in ImageSequence.Iterator(image)]
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path} is not a readable TIFF file: {err}.") from err
        shapes = {p.shape for p in pages}
        if len(shapes) != 1 or pages[0].ndim != 2:
            raise ValueError(f"{path}: pages must be single-channel and of one size, got shapes {sorted(shapes)}.")
        stack = np.stack(pages, axis=-1)  # (rows, columns, pages)
        array = np.ascontiguousarray(np.swapaxes(stack, 0, 1))  # (columns, rows, pages)
        if array.shape[-1] == 1:
            array = array[..., 0]
        return {"array": array, "path": str(path)}

    def get_data(self, img: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """The array and its metadata: a diagonal affine from ``spacing``."""
        array = img["array"]
        ndim = array.ndim
        spacing = np.ones(ndim) if self.spacing is None else np.asarray(self.spacing, dtype=np.float64)
        if len(spacing) < ndim:
            raise ValueError(f"spacing {tuple(spacing)} has fewer sizes than {img['path']} has axes ({ndim}).")
        spacing = spacing[:ndim]
        affine = np.eye(4)
        affine[range(ndim), range(ndim)] = spacing
        meta = {
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing": spacing,
            "filename_or_obj": img["path"],
        }
        return array, meta
