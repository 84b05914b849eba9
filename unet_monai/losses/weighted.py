"""A pixel-weighted segmentation loss that takes the weight map from the batch.

No MONAI loss takes a per-pixel weight map (MONAI #6355; nnU-Net #1274, #1471 neither). This is the
paper's energy, the softmax cross-entropy weighted by w(x) (eq. 1), optionally plus MONAI's Dice loss, with an
optional ignore value for unlabelled voxels (sparse annotation, Cicek et al. 2016; nnU-Net v2's ignore label).
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

    With ``ignore_index`` set, the voxels whose label is that value (the unlabelled voxels of a sparse
    annotation) are left out of both terms, so they never contribute a gradient:

    - cross-entropy: their weight is 0 and the mean is over the labelled voxels of the whole batch,
      ``sum_{x labelled} w(x) * CE(x) / #labelled`` (today's ``mean_x(w(x) * CE(x))`` when nothing is ignored);
    - Dice: MONAI's ``DiceLoss(ignore_index=...)`` masks the softmax (sigmoid) prediction and the one-hot target
      there (the ignore value is never one-hot encoded as a class); the per-sample, per-class Dice losses are
      averaged over the samples that have at least one labelled voxel (a sample with none has nothing to score).

    A batch without any labelled voxel gives a loss of 0 with a zero gradient. The loss is then exactly the
    loss computed on the gathered labelled voxels alone.

    Args:
        lambda_dice: weight of MONAI's ``DiceLoss`` (softmax / sigmoid, one-hot target); 0 for none.
        weight_in_target: read the weight map from target channel 1 when ``weight`` is not given (the label
            channel 0 may hold the ignore value).
        ignore_index: the label value of unlabelled voxels (e.g. 255), or None (every voxel is labelled). It must
            not be a class of the logits: not in ``0..C-1`` for ``C`` channels (``0..1`` for one channel).
        dice_include_background: whether the Dice term scores class 0 too (MONAI's ``include_background``); False
            is nnU-Net's choice (``do_bg=False``). The cross-entropy always covers every class. Softmax only: with
            one sigmoid channel there is no background channel to leave out.
    """

    def __init__(
        self,
        lambda_dice: float = 0.0,
        weight_in_target: bool = False,
        ignore_index: int | None = None,
        dice_include_background: bool = True,
    ) -> None:
        super().__init__()
        if lambda_dice < 0:
            raise ValueError(f"lambda_dice must be >= 0, got {lambda_dice}.")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise TypeError(f"ignore_index must be an integer label value or None, got {ignore_index!r}.")
        self.lambda_dice = lambda_dice
        self.weight_in_target = weight_in_target
        self.ignore_index = ignore_index
        # with an ignore value: per sample and class, averaged in _ignoring over the samples with labelled voxels
        reduction = "mean" if ignore_index is None else "none"
        self._dice_softmax = DiceLoss(
            include_background=dice_include_background,
            to_onehot_y=True,
            softmax=True,
            ignore_index=ignore_index,
            reduction=reduction,
        )
        self._dice_sigmoid = DiceLoss(sigmoid=True, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``input`` ``(B, C, *S)`` logits; ``target`` ``(B, 1, *S)`` class indices (or ``(B, 2, *S)`` with
        the weight map in channel 1), ``ignore_index`` where unlabelled; ``weight`` ``(B, 1, *S)`` or None
        -> scalar loss (float32)."""
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
        if self.ignore_index is not None:
            return self._ignoring(input, target, weight, self.ignore_index)
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

    def _ignoring(
        self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int
    ) -> torch.Tensor:
        """The loss over the labelled voxels (``target != ignore_index``); float32 ``input`` ``(B, C, *S)``."""
        channels = input.shape[1]
        if 0 <= ignore_index < max(channels, 2):
            raise ValueError(
                f"ignore_index must not be a class of the {channels}-channel logits (0..{max(channels, 2) - 1}), "
                f"got {ignore_index}."
            )
        labelled = target != ignore_index  # (B, 1, *S)
        clean = torch.where(labelled, target, torch.zeros_like(target))  # class 0 where ignored, masked below
        if channels == 1:
            per_voxel = F.binary_cross_entropy_with_logits(input, clean.float(), reduction="none")
            dice = self._dice_sigmoid
        else:
            per_voxel = F.cross_entropy(input, clean[:, 0].long(), reduction="none").unsqueeze(1)
            dice = self._dice_softmax
        if weight is not None:
            per_voxel = per_voxel * weight.float()
        per_voxel = torch.where(labelled, per_voxel, torch.zeros_like(per_voxel))  # no gradient reaches ignored voxels
        loss = per_voxel.sum() / labelled.sum().clamp(min=1)
        if self.lambda_dice > 0:
            per_sample = dice(input, target).flatten(1).mean(1)  # (B,): mean over classes, labelled voxels only
            scored = labelled.flatten(1).any(1)  # (B,)
            per_sample = torch.where(scored, per_sample, torch.zeros_like(per_sample))
            loss = loss + self.lambda_dice * per_sample.sum() / scored.sum().clamp(min=1)
        return loss
