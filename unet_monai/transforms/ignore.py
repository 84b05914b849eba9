"""Unlabelled voxels (the ignore value of sparse annotations) out of MONAI's metric handlers.

MONAI's ``MeanDice`` and ``AsDiscreted(to_onehot=...)`` know no ignore value: a label of 255 cannot be one-hot
encoded, and an ignored voxel would count as a false positive wherever the network predicts foreground. This turns
every ignored voxel into a true negative of every class before the one-hot step, so that the training and
validation Dice of ``train.json`` count labelled voxels only (``unet_monai.metrics.case_scores`` takes
``ignore_index`` itself).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

__all__ = ["MaskIgnoredd"]


class MaskIgnoredd(MapTransform):
    """Where ``label`` holds ``ignore_index``, set the label to background (0) and make the prediction background.

    A dictionary transform only: it needs the label and the prediction of the same item together.

    Args:
        keys: the prediction keys, logits ``(C, *S)`` (C > 1: class 0 gets the largest logit there) or labels
            ``(1, *S)`` (set to 0 there).
        label_key: the label ``(1, *S)`` that holds the ignore value.
        ignore_index: the label value of unlabelled voxels; None does nothing.
        allow_missing_keys: skip keys that are absent.
    """

    def __init__(
        self, keys: Any, label_key: str = "label", ignore_index: int | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.ignore_index = ignore_index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.ignore_index is None:
            return d
        label = d[self.label_key]
        ignored = label[0] == self.ignore_index  # (*S)
        if not bool(ignored.any()):
            return d
        for key in self.key_iterator(d):
            pred = d[key].clone()
            if pred.shape[1:] != label.shape[1:]:
                raise ValueError(
                    f"{key} must have the spatial shape of {self.label_key} {tuple(label.shape[1:])}, "
                    f"got {tuple(pred.shape)}."
                )
            if pred.shape[0] > 1:
                top = pred.amax(dim=0)  # (*S)
                pred[0] = torch.where(ignored, top + 1, pred[0])
            else:
                pred[0] = torch.where(ignored, torch.zeros_like(pred[0]), pred[0])
            d[key] = pred
        masked = label.clone()
        masked[0] = torch.where(ignored, torch.zeros_like(masked[0]), masked[0])
        d[self.label_key] = masked
        return d
