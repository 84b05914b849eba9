"""Loading with exactly the readers asked for."""

from __future__ import annotations

from typing import Any

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

__all__ = ["StrictLoadImaged"]


class StrictLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged`` that uses only the readers it is given, so that their errors reach the user.

    MONAI's loader tries its default readers after a given reader raises: a folder with two DICOM series,
    which :class:`~unet_monai.io.DicomSeriesReader` refuses with a list of the series, would then be read
    by ``ITKReader`` (first series, a warning) or ``PydicomReader`` (slices in InstanceNumber order).
    Here a failure raises ``RuntimeError`` with every given reader's message.

    Args:
        keys: keys to load.
        reader: one reader or several (instances or classes), tried in the given order.
        kwargs: the other arguments of ``monai.transforms.LoadImaged`` (``image_only``, ``dtype``, ...).
    """

    def __init__(self, keys: KeysCollection, reader: ImageReader | type | list, **kwargs: Any) -> None:
        super().__init__(keys, reader=reader, **kwargs)  # type: ignore[arg-type]  # MONAI also takes instances
        given = len(ensure_tuple(reader))
        self._loader.readers = self._loader.readers[-given:]  # drop the defaults MONAI registered first
