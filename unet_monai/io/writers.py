"""Writers that never leave a half-written file under a final name, and label maps saved in the input's format.

``SaveLabelsd`` is the bundle's output step: a PNG input gets a PNG label, a TIFF input a TIFF label (rows and
columns as in the input file, so that the two overlay in any viewer), every other input (NIfTI, a DICOM series)
a NIfTI label with the input's affine. It calls one writer directly: a write error (a read-only or full output
folder) reaches the user as the writer raised it, naming the file, where MONAI's ``SaveImage`` would report it
as "cannot find a suitable writer ... install the writer libraries".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data import FolderLayout, ImageWriter, MetaTensor, NibabelWriter, PILWriter
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_numpy

from unet_monai.io.atomic import atomic_path

__all__ = [
    "AtomicNibabelWriter",
    "AtomicPILWriter",
    "AtomicTiffWriter",
    "SaveLabels",
    "SaveLabelsd",
    "label_suffix",
]

logger = logging.getLogger(__name__)

PNG_SOURCES = (".png", ".jpg", ".jpeg", ".bmp")  # read by MONAI's PILReader; a label is never a lossy JPEG
TIFF_SOURCES = (".tif", ".tiff")  # read by TiffStackReader


def label_suffix(source: str | os.PathLike | Sequence | None) -> str:
    """The file suffix of the label map for an input file: ``".png"`` for PNG (and JPEG, BMP) images,
    the input's own ``".tif"``/``".tiff"`` for TIFF stacks, ``".nii.gz"`` for everything else (NIfTI, a DICOM
    series folder, no file).

    Args:
        source: the input's ``filename_or_obj`` metadata (a path, or a list of paths whose first one counts).
    """
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    if source is None:
        return ".nii.gz"
    name = os.path.basename(str(source).rstrip("/\\")).lower()
    if name.endswith(PNG_SOURCES):
        return ".png"
    if name.endswith(TIFF_SOURCES):
        return name[name.rindex(".") :]
    return ".nii.gz"


def _source_of(meta_dict: Mapping | None) -> Path | None:
    source = (meta_dict or {}).get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    return Path(str(source)).resolve() if source else None


def _refuse_source(target: Path, source: Path | None) -> None:
    if source is not None and target.resolve() == source:
        raise ValueError(f"refusing to write over the input {target}; choose another output_dir or postfix.")


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
        self.source = _source_of(meta_dict)
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
        _refuse_source(target, self.source)
        suffix = "".join(target.suffixes) or ".nii.gz"  # nibabel picks the format and compression from it
        with atomic_path(target, suffix=f".tmp{suffix}") as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)


class AtomicPILWriter(PILWriter):
    """MONAI's ``PILWriter`` (2D PNG and other Pillow formats) writing atomically, never over its input, and
    without MONAI's default intensity scaling (``scale=None``: label values are written as they are).

    The data is channel-first ``(C, X, Y)`` as MONAI's ``PILReader`` returns it (``X`` the columns of the file);
    the file gets the image's own rows and columns back (``reverse_indexing``, MONAI's default).

    Args:
        output_dtype: the file's data type (``np.uint8`` for a label map, ``np.uint16`` for more than 255 classes).
        scale: see MONAI's ``PILWriter``; None keeps the values.
    """

    def __init__(self, output_dtype: DtypeLike = np.uint8, scale: int | None = None, **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, scale=scale, **kwargs)
        self.source: Path | None = None

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options: Any) -> None:
        self.source = _source_of(meta_dict)
        super().set_metadata(meta_dict, resample, **options)

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        target = Path(filename)
        _refuse_source(target, self.source)
        with atomic_path(target, suffix=f".tmp{target.suffix}") as tmp:  # Pillow picks the format from the suffix
            super().write(tmp, verbose=verbose, **kwargs)


class AtomicTiffWriter(ImageWriter):
    """A (multi-page) TIFF written atomically with Pillow, in the layout :class:`~unet_monai.io.TiffStackReader`
    reads: data ``(X, Y[, Z])`` (after the channel axis) becomes pages ``Z`` of ``Y`` rows by ``X`` columns.

    MONAI has no TIFF writer of its own without ITK. Pages are compressed losslessly (Adobe deflate). The data is
    written on its own grid (no resampling).

    Args:
        output_dtype: ``np.uint8`` (default) or ``np.uint16``.
    """

    def __init__(self, output_dtype: DtypeLike = np.uint8, **kwargs: Any) -> None:
        dtype = np.dtype(output_dtype or np.uint8)
        if dtype not in (np.uint8, np.uint16):
            raise ValueError(f"output_dtype must be uint8 or uint16 for a TIFF label, got {dtype}.")
        kwargs.pop("scale", None)  # SaveImage passes it; labels are never rescaled
        super().__init__(**kwargs)
        self.output_dtype = dtype
        self.source: Path | None = None
        self.data_obj: np.ndarray | None = None

    def set_data_array(
        self, data_array: NdarrayOrTensor, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        """Take ``data_array``: ``(1, X, Y[, Z])`` with ``channel_dim=0``, or ``(X, Y[, Z])`` with None."""
        data = convert_to_numpy(data_array)
        if channel_dim is not None:
            if data.shape[channel_dim] != 1:
                raise ValueError(f"TIFF label data must have one channel, got shape {tuple(data.shape)}.")
            data = np.squeeze(data, axis=channel_dim)
        if data.ndim not in (2, 3):
            raise ValueError(f"TIFF label data must be (X, Y) or (X, Y, Z), got shape {tuple(data.shape)}.")
        self.data_obj = data

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = False, **options: Any) -> None:
        """Note the input file (never overwritten); ``resample`` must be False."""
        if resample:
            raise ValueError(
                "resample must be False for AtomicTiffWriter (labels are written on their grid), got True."
            )
        self.source = _source_of(meta_dict)

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write the pages to ``filename`` through a temporary file beside it."""
        from PIL import Image

        if self.data_obj is None:
            raise RuntimeError("AtomicTiffWriter.write needs set_data_array first.")
        target = Path(filename)
        _refuse_source(target, self.source)
        super().write(target, verbose=verbose)
        data = self.data_obj.astype(self.output_dtype, copy=False)
        stack = data[..., None] if data.ndim == 2 else data  # (X, Y, Z)
        pages = [Image.fromarray(np.ascontiguousarray(stack[..., z].T)) for z in range(stack.shape[-1])]
        with atomic_path(target, suffix=f".tmp{target.suffix}") as tmp:
            pages[0].save(tmp, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")


_WRITERS: dict[str, type[ImageWriter]] = {
    ".png": AtomicPILWriter,
    ".tif": AtomicTiffWriter,
    ".tiff": AtomicTiffWriter,
    ".nii.gz": AtomicNibabelWriter,
}


class SaveLabels(Transform):
    """Save a label map in the format of the file it was predicted from (see :func:`label_suffix`), atomically.

    The name is MONAI's: ``<output_dir>/<input name>_<output_postfix><suffix>`` (``separate_folder`` and
    ``data_root_dir`` as in MONAI's ``SaveImage``). A PNG or TIFF label has the input file's rows and columns
    (the label map must be on the input's grid, ``spatial_shape`` in its metadata); a NIfTI label has the label's
    affine (the input's, unless a spacing or orientation stage changed the grid). Write errors are raised as the
    writer raised them (``OSError`` "cannot write <file>: Read-only file system / No space left on device /
    Permission denied ..."), never hidden behind another writer's attempt.

    Args:
        output_dir: the folder for the labels (created when missing).
        output_postfix: added to the input's name.
        output_dtype: ``np.uint8`` (default; up to 255 classes) or ``np.uint16``.
        separate_folder: one sub-folder per input, as in MONAI's ``SaveImage``.
        data_root_dir: keep the inputs' folders below this root, as in MONAI's ``SaveImage``.
        print_log: log each file written (INFO).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike = "./",
        output_postfix: str = "seg",
        output_dtype: DtypeLike = np.uint8,
        separate_folder: bool = False,
        data_root_dir: str | os.PathLike = "",
        print_log: bool = False,
    ) -> None:
        self.output_dtype = np.dtype(output_dtype)
        if self.output_dtype not in (np.uint8, np.uint16):
            raise ValueError(f"output_dtype must be uint8 or uint16, got {self.output_dtype}.")
        self.layouts = {
            suffix: FolderLayout(
                output_dir=output_dir,
                postfix=output_postfix,
                extension=suffix,
                parent=separate_folder,
                makedirs=False,  # atomic_path makes the folder and names it if that fails
                data_root_dir=data_root_dir,
            )
            for suffix in _WRITERS
        }
        self.print_log = print_log

    def __call__(self, label: torch.Tensor, meta_data: Mapping | None = None) -> torch.Tensor:
        """Write ``label`` ``(1, X, Y[, Z])`` (class indices, voxels of the input's grid); return it unchanged.

        Args:
            label: a MetaTensor (its ``meta`` is used) or a tensor with ``meta_data``.
            meta_data: the metadata when ``label`` is not a MetaTensor (``filename_or_obj``, ``affine``,
                ``spatial_shape``).

        Raises:
            ValueError: ``label`` is not one channel, or holds values the output type cannot hold, or (PNG and
                TIFF) is not on the input's grid or (PNG) not 2D.
            OSError: the file could not be written (the message names it and the cause).
        """
        meta = dict(label.meta) if isinstance(label, MetaTensor) else dict(meta_data or {})
        source = meta.get("filename_or_obj")
        suffix = label_suffix(source)
        layout = self.layouts[suffix]
        subject = source[0] if isinstance(source, (list, tuple)) and source else source
        filename = Path(layout.filename(subject=f"{subject if subject is not None else 'label'}"))
        self._check(label, meta, suffix, filename)
        writer = _WRITERS[suffix](output_dtype=self.output_dtype)
        writer.set_data_array(label, channel_dim=0, squeeze_end_dims=True)
        writer.set_metadata(meta, resample=False)
        writer.write(filename, verbose=False)
        if self.print_log:
            logger.info("wrote %s", filename)
        return label

    def _check(self, label: torch.Tensor, meta: Mapping, suffix: str, filename: Path) -> None:
        shape = tuple(label.shape)
        if len(shape) not in (3, 4) or shape[0] != 1:
            raise ValueError(f"labels for {filename} must be (1, X, Y[, Z]) class indices, got shape {shape}.")
        # a uint8 label (the memory-mapped argmax) always fits: not read again, its pages stay released
        fits = label.dtype in (torch.bool, torch.uint8) or (
            self.output_dtype == np.uint16 and label.dtype == torch.uint16
        )
        if label.numel() and not fits:
            low, high = (float(v) for v in torch.aminmax(torch.as_tensor(label)))
            top = np.iinfo(self.output_dtype).max
            if low < 0 or high > top:
                raise ValueError(
                    f"labels for {filename} must be in [0, {top}] for {self.output_dtype}, got [{low:g}, {high:g}]."
                )
        if suffix == ".nii.gz":
            return
        if suffix == ".png" and len(shape) != 3:
            raise ValueError(f"labels for the PNG {filename} must be 2D (1, X, Y), got shape {shape}.")
        expected = meta.get("spatial_shape")
        if expected is not None and tuple(int(s) for s in np.ravel(convert_to_numpy(expected))) != shape[1:]:
            raise ValueError(
                f"labels for {filename} must be on the input's grid {tuple(np.ravel(expected).tolist())} "
                f"(columns, rows[, pages]), got {shape[1:]}; a resampling stage must be inverted before saving."
            )


class SaveLabelsd(MapTransform):
    """Dictionary twin of :class:`SaveLabels`: saves ``data[key]`` for each key; see :class:`SaveLabels`.

    Args:
        keys: keys of the label maps (``"pred"`` after ``AsDiscreted(argmax=True)``).
        allow_missing_keys: skip keys that are absent.
        kwargs: :class:`SaveLabels`' arguments.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveLabels(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = d.get(f"{key}_meta_dict")
            self.saver(d[key], meta_data=meta)
        return d
