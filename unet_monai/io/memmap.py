"""Memory-mapped NIfTI input for volumes larger than RAM: load without reading, batch without copying.

MONAI's ``LoadImage`` makes every array C-contiguous (``np.ascontiguousarray``), which copies a NIfTI file's
Fortran-ordered voxels into RAM, and its collate stacks each batch into a new tensor: both read the whole volume.
Here the voxels stay in the file until a tile reads them (``OverlapTileInferer`` gathers tiles from any strided
tensor and can z-score them as it goes: ``normalize=True``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, list_data_collate
from monai.transforms import MapTransform

__all__ = ["MemmapNiftiReader", "LoadMemmapNiftid", "view_collate"]


class MemmapNiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` that returns the voxels as a copy-on-write ``numpy.memmap`` of the file.

    Only uncompressed ``.nii`` files whose voxels need no scaling (``scl_slope`` 1 or unset, ``scl_inter`` 0)
    can be mapped; anything else raises ``ValueError`` naming the file, rather than silently reading it whole.
    The array keeps the file's (Fortran) order, so it is not contiguous in C order.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mmap="c", **kwargs)

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(str(name).lower().endswith(".nii") for name in names)

    def _get_array_data(self, img: Any, filename: str) -> np.ndarray:
        name = str(filename)
        if not name.lower().endswith(".nii"):
            raise ValueError(
                f"{name}: memory-mapped reading needs an uncompressed .nii file, got {Path(name).name!r}; "
                "decompress it first (e.g. gunzip), or read it into RAM without memory mapping."
            )
        slope, inter = img.dataobj.slope, img.dataobj.inter
        if (slope, inter) != (1.0, 0.0):
            raise ValueError(
                f"{name}: memory-mapped reading needs voxels stored without scaling (scl_slope 1, scl_inter 0), "
                f"got scl_slope {slope} and scl_inter {inter}; save the scaled values, or read it into RAM."
            )
        data = np.asanyarray(img.dataobj)
        if not isinstance(data, np.memmap):
            raise ValueError(f"{name}: nibabel could not memory-map the voxels of this file (got {type(data)}).")
        return data


class LoadMemmapNiftid(MapTransform):
    """Load uncompressed NIfTI files as ``MetaTensor`` views of their memory-mapped voxels.

    The same metadata as MONAI's ``LoadImaged`` with ``NibabelReader`` (``affine``, ``original_affine``,
    ``spatial_shape``, ``filename_or_obj``, ...) and the file's own dtype; nothing is read until it is used.
    Pass the result to ``EnsureChannelFirstd`` (a view too), and use :func:`view_collate` in the data loader.

    Args:
        keys: keys holding file paths.
        allow_missing_keys: skip keys that are absent.

    Raises:
        FileNotFoundError: a path does not exist. ``ValueError``: a file cannot be memory-mapped (compressed, or
        scaled voxels; the message names the file).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reader = MemmapNiftiReader()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(str(d[key]))
            if not path.is_file():
                raise FileNotFoundError(f"{key}: no such file {path}.")
            if not self.reader.verify_suffix(str(path)):
                raise ValueError(f"{key} {path}: memory-mapped reading needs an uncompressed .nii file.")
            array, meta = self.reader.get_data(self.reader.read(str(path)))
            meta["filename_or_obj"] = str(path)
            d[key] = MetaTensor(torch.from_numpy(array), meta=meta)
        return d


def view_collate(batch: Sequence[Any]) -> Any:
    """MONAI's ``list_data_collate`` for a batch of one case, with the batch axis added as a view.

    ``torch.stack`` would copy a memory-mapped volume into RAM; a batch of one needs no stacking. Metadata and
    applied operations are collated by MONAI itself. Batches of several cases go to ``list_data_collate``.

    Args:
        batch: a list of samples (dictionaries of ``MetaTensor`` ``(C, *S)`` and other values).

    Returns:
        The collated batch, tensors ``(1, C, *S)`` sharing memory with the samples.
    """
    if len(batch) != 1 or not isinstance(batch[0], Mapping):
        return list_data_collate(batch)
    sample = batch[0]
    proxies = {
        key: MetaTensor(torch.zeros(1), meta=value.meta, applied_operations=value.applied_operations)
        if isinstance(value, MetaTensor)
        else value
        for key, value in sample.items()
    }
    collated = list_data_collate([proxies])  # MONAI's own collation of everything but the voxels
    for key, value in sample.items():
        if isinstance(value, MetaTensor):
            view = MetaTensor(
                value.as_tensor().unsqueeze(0),
                meta=collated[key].meta,
                applied_operations=collated[key].applied_operations,
            )
            view.is_batch = True
            collated[key] = view
    return collated
