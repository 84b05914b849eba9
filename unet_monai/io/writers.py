"""Writers that never leave a half-written file under a final name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import NibabelWriter
from monai.utils import convert_to_numpy

from unet_monai.io.atomic import atomic_path

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` that writes to a temporary file in the target folder, then renames it.

    A crash or a full disk mid-write leaves at most a hidden ``.<name>.*.tmp`` file, never a truncated
    ``<name>.nii.gz`` that looks finished; the rename is atomic on one file system. It also refuses to write
    over the file the data was read from (``filename_or_obj`` in the metadata). With ``resample=False`` the data goes
    to nibabel as it is, where MONAI's writer makes a float32 copy of it (a memory-mapped label map stays in its
    file). Use it as
    ``SaveImaged(..., writer="unet_monai.io.AtomicNibabelWriter")`` or in code as MONAI's writer.
    """

    def __init__(self, output_dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, **kwargs)
        self.source: Path | None = None  # the file the data came from, never overwritten

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options: Any) -> None:
        source = (meta_dict or {}).get("filename_or_obj")
        self.source = Path(str(source)).resolve() if source else None
        if resample:
            super().set_metadata(meta_dict, resample, **options)
            return
        # MONAI's writer sends the data through its resampler even with resample=False, which returns a float32
        # copy (four times a uint8 label map) that is then cast back: keep the data and take the affine as it is
        _, affine, _ = self.get_meta_info(meta_dict)
        if self.output_dtype is None and self.data_obj is not None and hasattr(self.data_obj, "dtype"):
            self.output_dtype = self.data_obj.dtype  # type: ignore[assignment]  # as MONAI does
        self.affine = None if affine is None else np.asarray(convert_to_numpy(affine), dtype=np.float64)

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        target = Path(filename)
        if self.source is not None and target.resolve() == self.source:
            raise ValueError(f"refusing to write over the input {target}; choose another output_dir or postfix.")
        suffix = "".join(target.suffixes) or ".nii.gz"  # nibabel picks the format and compression from it
        with atomic_path(target, suffix=f".tmp{suffix}") as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
