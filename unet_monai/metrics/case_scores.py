"""All the scores of one case (a label map against its ground truth), as ``evaluate.json`` reports them.

Dice, IoU and the 95th-percentile Hausdorff distance come from MONAI (``compute_dice``, ``compute_iou``,
``compute_hausdorff_distance``); pixel error and the ISBI 2012 EM scores from ``rand_info``. An ignore value in the
ground truth (the unlabelled voxels of a sparse annotation) takes those voxels out of every score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

from unet_monai.metrics.rand_info import em_segmentation_scores

__all__ = ["case_scores"]


def _one_hot(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    return torch.stack([labels == c for c in classes]).unsqueeze(0).float()  # (1, C, ...)


def _spatial(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(1, H, W[, D])`` or ``(H, W[, D])`` -> ``(H, W[, D])`` (a leading axis of size 1 is the channel)."""
    array = torch.as_tensor(np.asarray(labels))
    return array[0] if array.ndim in (3, 4) and array.shape[0] == 1 else array


def case_scores(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    classes: Mapping[int, str],
    spacing: Sequence[float] | None = None,
    hd95: bool = False,
    boundary_class: int | None = None,
    ignore_index: int | None = None,
) -> dict[str, float]:
    """Scores of one predicted label map against the true one.

    Args:
        pred: integer labels ``(H, W[, D])`` or ``(1, H, W[, D])``.
        label: the ground truth, same shape.
        classes: the foreground label values to score and their names, e.g. ``{1: "spleen", 2: "liver"}`` (the
            datalist's, ``unet_monai.io.manifest.manifest_class_names``); per-class keys are ``dice_<name>``,
            ``iou_<name>`` and ``hd95_<name>``, in the order of ``classes``. Names must be distinct.
        spacing: voxel size in mm (or any unit) per spatial axis, for the Hausdorff distance; voxels if None.
        hd95: also compute the 95th-percentile Hausdorff distance (in the unit of ``spacing``).
        boundary_class: the label of membranes (EM): adds ``pixel_error``, ``rand_error``, ``v_rand``,
            ``v_info`` and their split/merge parts (``rand_info.em_segmentation_scores``).
        ignore_index: the label value of unlabelled voxels in ``label`` (e.g. 255), or None. Those voxels count
            as neither prediction nor ground truth of any class: they are left out of Dice, IoU and pixel error,
            and for HD95 both maps are empty there (so a cut through an annotated region is a boundary of both).
            Not combinable with ``boundary_class`` (the ISBI 2012 scores have no ignore value).

    Returns:
        metric name -> value; ``pixel_error`` (fraction of the (labelled) voxels with the wrong label) always.
        Dice and IoU are NaN for a class absent from both maps; HD95 is NaN (or inf) when one of them is empty;
        pixel error is NaN when no voxel is labelled.

    Raises:
        ValueError: the shapes differ; ``classes`` is empty, has repeated names, non-integer values or names
            ``ignore_index``; ``ignore_index`` comes with ``boundary_class``.
    """
    p, t = _spatial(pred), _spatial(label)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(t.shape)}.")
    if not classes:
        raise ValueError("classes must name at least one foreground label value.")
    try:
        values = [int(value) for value in classes]
    except (TypeError, ValueError) as err:
        raise ValueError(f"classes must map integer label values to names, got {dict(classes)!r}.") from err
    names = [str(name) for name in classes.values()]
    if len(set(names)) != len(names):
        raise ValueError(f"classes must have distinct names (they key the scores), got {dict(classes)!r}.")
    if ignore_index is not None and ignore_index in values:
        raise ValueError(f"classes must not include the ignore value {ignore_index}, got {dict(classes)!r}.")
    if ignore_index is not None and boundary_class is not None:
        raise ValueError(
            f"ignore_index must be None with boundary_class (the ISBI 2012 scores have no ignore value), "
            f"got {ignore_index}."
        )
    p_hot, t_hot = _one_hot(p, values), _one_hot(t, values)
    labelled = None if ignore_index is None else t != ignore_index  # (H, W[, D])
    if labelled is not None:  # ignored voxels: neither prediction nor truth of any class
        p_hot, t_hot = p_hot * labelled, t_hot * labelled
    dice = compute_dice(p_hot, t_hot, include_background=True, ignore_empty=True)[0]
    iou = compute_iou(p_hot, t_hot, include_background=True, ignore_empty=True)[0]
    scores: dict[str, float] = {}
    for i, name in enumerate(names):
        scores[f"dice_{name}"] = float(dice[i])
        scores[f"iou_{name}"] = float(iou[i])
    if hd95:
        hd = compute_hausdorff_distance(
            p_hot, t_hot, include_background=True, percentile=95, spacing=list(spacing) if spacing else None
        )[0]
        for i, name in enumerate(names):
            scores[f"hd95_{name}"] = float(hd[i])
    wrong = p != t if labelled is None else (p != t)[labelled]
    scores["pixel_error"] = float(wrong.double().mean()) if wrong.numel() else float("nan")
    if boundary_class is not None:
        em = em_segmentation_scores((p == boundary_class).numpy(), (t == boundary_class).numpy())
        scores.update({k: v for k, v in em.items() if k != "pixel_error"})
        scores["pixel_error"] = em["pixel_error"]
    return scores
