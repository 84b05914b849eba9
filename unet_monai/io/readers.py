"""Loading with exactly the readers asked for, and errors that name the file and the problem."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

__all__ = ["StrictLoadImaged", "check_gzip"]


def check_gzip(path: str | os.PathLike) -> None:
    """Read the gzip file ``path`` to its end, so that its CRC-32 and length are checked.

    nibabel reads only as many bytes as the header asks for and never reaches the checksum: a flipped byte in a
    ``.nii.gz`` gives wrong voxels without an error. This costs one extra decompression pass (about as long as
    reading the file).

    Raises:
        ValueError: the stream is truncated or corrupt (the message names ``path``).
    """
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is a truncated or corrupt gzip file ({type(err).__name__}: {err}).") from err


class StrictLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged`` that uses only the readers it is given, so that their errors reach the user.

    MONAI's loader tries its default readers after a given reader raises: a file that a given reader refuses
    is then read by whichever default reader accepts it, or fails with MONAI's "cannot find a suitable reader".
    (:class:`~unet_monai.io.DicomSeriesReader` guards itself: it hands a refusal of a DICOM input to
    ``get_data``, outside MONAI's fallback, so a folder with two series is never read by ``ITKReader``.)
    Here the readers whose ``verify_suffix`` accepts the path are tried in the given order (all given readers
    when none accepts it), and every failure names the file:

    - a path that does not exist raises ``FileNotFoundError``;
    - a ``.gz`` file is read to its end first (:func:`check_gzip`): a truncated or corrupt one raises
      ``ValueError``;
    - when no reader can read the file (including errors while decoding its voxels, which MONAI lets through
      raw), ``RuntimeError`` with each reader's error;
    - a file that holds no voxels (a zero-length dimension) raises ``ValueError``.

    Other checks of the loaded data (NaN, dimensionality, shapes and affines of image and label) are
    :class:`~unet_monai.transforms.CheckImaged`'s.

    Args:
        keys: keys to load.
        reader: one reader or several (instances, classes or MONAI reader names such as ``"NibabelReader"``);
            None uses MONAI's default readers, chosen by suffix.
        verify_gzip: check ``.gz`` files whole before reading them (see :func:`check_gzip`).
        kwargs: the other arguments of ``monai.transforms.LoadImaged`` (``image_only``, ``dtype``, ...).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: ImageReader | str | type | Sequence | None = None,
        verify_gzip: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, reader=reader, **kwargs)  # type: ignore[arg-type]  # MONAI also takes instances
        if reader is None:
            self.readers: list[ImageReader] = self._loader.readers[::-1]  # MONAI's priority order
        else:
            self.readers = self._loader.readers[-len(ensure_tuple(reader)) :]  # drop the defaults MONAI registered
            self._loader.readers = list(self.readers)
        self.verify_gzip = verify_gzip

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        """Load every key's file(s); see the class docstring for the errors."""
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            loaded = self._load(key, d[key], reader)
            if self._loader.image_only:
                d[key] = loaded
                continue
            d[key], meta = loaded
            meta_key = meta_key or f"{key}_{meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = meta
        return d

    def _load(self, key: Hashable, filename: Any, reader: ImageReader | None) -> Any:
        files = ensure_tuple(filename)
        if not files or not all(isinstance(f, (str, os.PathLike)) for f in files):
            raise TypeError(f"{key} must be a path or a list of paths, got {filename!r}.")
        name = str(files[0]) if len(files) == 1 else str([str(f) for f in files])
        for file in files:
            path = Path(file).expanduser() if self._loader.expanduser else Path(file)
            if not path.exists():
                raise FileNotFoundError(f"{key} file {path} does not exist.")
            if self.verify_gzip and path.is_file() and path.name.lower().endswith(".gz"):
                check_gzip(path)
        if reader is not None:
            candidates = [reader]
        else:
            accepting = [r for r in self.readers if r.verify_suffix(files if len(files) > 1 else files[0])]
            candidates = accepting or self.readers
        errors = []
        for candidate in candidates:
            try:
                loaded = self._loader(filename, candidate)
            except Exception as err:  # readers raise many types (nibabel, PIL, pydicom, zlib, struct) on bad files
                errors.append((candidate, err))
                continue
            image = loaded if self._loader.image_only else loaded[0]
            if image.numel() == 0:
                header = getattr(image, "meta", {}).get("spatial_shape")
                found = f"array shape {tuple(image.shape)}"
                if header is not None:
                    found += f", spatial shape in the header {tuple(int(s) for s in header)}"
                raise ValueError(f"{key} file {name} holds no voxels ({found}): a zero-length dimension.")
            return loaded
        reasons = "; ".join(f"{type(r).__name__}: {type(e).__name__}: {e}" for r, e in errors)
        raise RuntimeError(f"cannot read {key} file {name}. {reasons}") from errors[-1][1]
