"""A pixel-weighted segmentation loss that takes the weight map from the batch.

No MONAI loss takes a per-pixel weight map (MONAI #6355; nnU-Net #1274, #1471 neither). This is the
paper's energy, the softmax cross-entropy weighted by w(x) (eq. 1), optionally plus MONAI's Dice loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch.nn.modules.loss import _Loss

__all__ = ["PixelWeightedCELoss"]


class PixelWeightedCELoss(_Loss):
    """Pixel-weighted softmax cross-entropy (or sigmoid BCE for one output channel), optionally plus Dice.

    ``loss = mean_x(w(x) * CE(x)) + lambda_dice * Dice``. With all weights 1 it is the plain mean
    cross-entropy (``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits``).

    The weight map comes either as the ``weight`` argument or, for MONAI's trainers, which hand the loss
    only ``(pred, label)``, as a second channel of the target (``weight_in_target=True``: target
    ``(B, 2, *S)`` = class index, weight; see ``ConcatItemsd``).

    Args:
        lambda_dice: weight of MONAI's ``DiceLoss`` (softmax / sigmoid, one-hot target); 0 for none.
        weight_in_target: read the weight map from target channel 1 when ``weight`` is not given.
    """

    def __init__(self, lambda_dice: float = 0.0, weight_in_target: bool = False) -> None:
        super().__init__()
        if lambda_dice < 0:
            raise ValueError(f"lambda_dice must be >= 0, got {lambda_dice}.")
        self.lambda_dice = lambda_dice
        self.weight_in_target = weight_in_target
        self._dice_softmax = DiceLoss(to_onehot_y=True, softmax=True)
        self._dice_sigmoid = DiceLoss(sigmoid=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``input`` ``(B, C, *S)`` logits; ``target`` ``(B, 1, *S)`` class indices (or ``(B, 2, *S)`` with
        the weight map in channel 1); ``weight`` ``(B, 1, *S)`` or None -> scalar loss."""
        if weight is None and self.weight_in_target:
            if target.shape[1] != 2:
                raise ValueError(f"target must be (B, 2, *S) = (label, weight), got shape {tuple(target.shape)}.")
            target, weight = target[:, :1], target[:, 1:]
        if target.shape[1] != 1 or target.shape[2:] != input.shape[2:] or target.shape[0] != input.shape[0]:
            raise ValueError(
                f"target must be (B, 1, *S) matching input {tuple(input.shape)}, got {tuple(target.shape)}."
            )
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f"weight must have the target's shape {tuple(target.shape)}, got {tuple(weight.shape)}.")
        input = input.float()
        if input.shape[1] == 1:
            per_voxel = F.binary_cross_entropy_with_logits(input, target.float(), reduction="none")
            dice = self._dice_sigmoid
        else:
            per_voxel = F.cross_entropy(input, target[:, 0].long(), reduction="none").unsqueeze(1)
            dice = self._dice_softmax
        loss = (per_voxel * weight.float()).mean() if weight is not None else per_voxel.mean()
        if self.lambda_dice > 0:
            loss = loss + self.lambda_dice * dice(input, target)
        return loss
