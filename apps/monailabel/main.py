"""A minimal MONAI Label (0.8.5) app that serves the unet bundle (its model-zoo layout) for inference.

MONAI Label's stock ``monaibundle`` app loads the bundle, but for a 2D bundle it answers with a label map of the
wrong geometry: its ``Restored`` step squeezes the channel only of 4D outputs, so the ``(1, H, W)`` label is
written as a 3D volume ``(1, H, W)`` whose first axis takes the input's first affine column; its ITK writer drops
the affine of 2D arrays (a 2D NIfTI label gets spacing 1 at the origin); and it writes the float label to PNG,
which ITK refuses. This app's infer task is the stock ``BundleInferTask`` plus four steps: the bundle's own file
writers are left out of the post-processing (as MONAI Label does with ``SaveImaged``), the channel of a 2D label
map is dropped, 2D NIfTI labels are written by MONAI's ``NibabelWriter`` with the input's affine (MONAI Label's own
``Writer(nibabel=True)`` path fails on MONAI 1.6: it asks for a resampling without a target shape), and labels are
written as ``uint8``.

Start it (see README.md)::

    monailabel start_server --app <copy of this folder> --studies <images> --conf bundle <zoo bundle folder>

``--conf bundle`` defaults to ``<app>/model/unet``; ``--conf models`` names the model (default ``unet``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import monailabel
import numpy as np
from monai.data import NibabelWriter
from monai.transforms import SaveImaged, SqueezeDimd
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import file_ext

logger = logging.getLogger(__name__)

BUNDLE_SAVERS = ("SaveLabelsd", "SaveDicomSegd")  # unet_monai.io transforms that write files beside the bundle


def bundle_savers() -> list[type]:
    """The bundle's file-writing post-processing classes that ``unet_monai.io`` defines."""
    import unet_monai.io

    return [getattr(unet_monai.io, name) for name in BUNDLE_SAVERS if hasattr(unet_monai.io, name)]


class UNetBundleInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` for the unet bundle: its post-processing without the bundle's own file
    writers, a 2D label map ``(1, H, W)`` squeezed to ``(H, W)`` after MONAI Label's ``Restored``, a 2D NIfTI label
    written by nibabel with the input's affine, and the label written as ``uint8`` (unless the request names
    ``result_dtype``).

    Args:
        path: the zoo-layout bundle folder (``configs/inference.json``, ``configs/metadata.json``,
            ``models/model.pt``).
        conf: the server's ``--conf`` values.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, post_filter=[SaveImaged, *bundle_savers()], **kwargs)

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = list(super().post_transforms(data))
        if self.dimension == 2:
            post.append(SqueezeDimd(keys=self.key_pred, dim=0))
        return post

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        dtype = dtype or data.get("result_dtype") or np.uint8
        path = data.get("image_path")
        ext = extension or data.get("result_extension") or (file_ext(path) if path else None)
        if self.dimension != 2 or ext not in (".nii", ".nii.gz"):
            return super().writer(data, extension, dtype)
        label = data[self.output_label_key]  # (H, W) in the input's index order, after Restored and the squeeze
        meta = data.get(f"{self.output_label_key}_meta_dict") or {}
        affine = meta.get("affine")  # Restored's copy of the input's affine (as MONAI Label's Writer takes it)
        if affine is None:
            affine = data[self.input_key].affine
        fd, output = tempfile.mkstemp(suffix=ext)
        os.close(fd)
        writer = NibabelWriter(output_dtype=dtype)
        writer.set_data_array(label, channel_dim=None)
        writer.set_metadata({"affine": affine}, resample=False)
        writer.write(output)
        return output, data.get(self.output_json_key, {})


class MyApp(MONAILabelApp):
    """Serves one bundle as the infer task ``--conf models`` (default ``unet``); no trainers, no strategies."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle = os.path.realpath(conf.get("bundle") or os.path.join(app_dir, "model", "unet"))
        self.model_name = conf.get("models", "unet")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"unet_monai bundle ({monailabel.__version__})",
            description="The paper-style U-Net bundle of unet_monai, served for inference",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        task = UNetBundleInferTask(self.bundle, self.conf)
        if not task.is_valid():
            raise RuntimeError(
                "bundle must hold configs/inference.json, configs/metadata.json and models/model.pt, "
                f"got {self.bundle}."
            )
        logger.info("+++ Adding Inferer:: %s => %s", self.model_name, self.bundle)
        return {self.model_name: task}
