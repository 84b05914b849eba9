"""The ISBI 2012 leaderboard's scores of a membrane probability map: best over a sweep of thresholds.

The paper's figures (pixel error 0.0611, Rand error 0.0382) are the challenge's original metrics, computed by
Fiji's ``trainableSegmentation.metrics`` from the submitted probability maps (Arganda-Carreras et al. 2015):

- pixel error = 1 - the maximal F-score of pixel similarity: cell pixels (label > 0, not membrane) are the
  positives, the proposal is binarised at thresholds 0.0, 0.1, ..., 1.0 (cell where its value > threshold), true
  and false positives and negatives are summed over all sections, and the best threshold's F-score counts;
- Rand error = 1 - the maximal F-score of the foreground-restricted Rand index (V_Rand), over the same thresholds
  (mean over the sections at each threshold);
- the leaderboard's final ranking uses V_Rand after border thinning (``rand_info.thin_boundaries``), reported
  here as ``rand_error_thinned``, over the same thresholds.

These are not the fraction of misclassified pixels at one threshold (``case_scores``' ``pixel_error``), which is
larger for the same map; both are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from unet_monai.metrics.rand_info import cells_from_boundaries, foreground_restricted_scores, thin_boundaries

__all__ = ["CHALLENGE_THRESHOLDS", "threshold_sweep", "challenge_scores"]

CHALLENGE_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def threshold_sweep(
    membrane_probability: np.ndarray,
    true_boundary: np.ndarray,
    thresholds: Sequence[float] = CHALLENGE_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Pixel counts and V_Rand of one section (or volume) at each threshold, as the leaderboard computes them.

    Args:
        membrane_probability: float ``(H, W[, D])`` in [0, 1], the predicted probability of membrane.
        true_boundary: boolean, same shape, True on true membranes.
        thresholds: cell-probability thresholds (the proposal 1 - ``membrane_probability`` is a cell where > t).

    Returns:
        ``thresholds`` and, per threshold, ``true_positives``, ``false_positives``, ``false_negatives`` (cell
        pixels as positives), ``misclassified`` (fraction of pixels), ``v_rand`` and ``v_rand_thinned`` (after
        border thinning).

    Raises:
        ValueError: the shapes differ.
    """
    probability = np.asarray(membrane_probability, dtype=np.float64)
    truth = np.asarray(true_boundary, dtype=bool)
    if probability.shape != truth.shape:
        raise ValueError(
            f"membrane probability shape {probability.shape} differs from true boundary shape {truth.shape}."
        )
    true_cell = ~truth
    true_cells = cells_from_boundaries(truth)
    cell_probability = 1.0 - probability
    rows: dict[str, list[float]] = {k: [] for k in ("true_positives", "false_positives", "false_negatives")}
    rows.update(misclassified=[], v_rand=[], v_rand_thinned=[])
    for threshold in thresholds:
        cell = cell_probability > threshold
        rows["true_positives"].append(float((cell & true_cell).sum()))
        rows["false_positives"].append(float((cell & ~true_cell).sum()))
        rows["false_negatives"].append(float((~cell & true_cell).sum()))
        rows["misclassified"].append(float((cell != true_cell).mean()))
        cells = cells_from_boundaries(~cell)
        rows["v_rand"].append(foreground_restricted_scores(cells, true_cells)["v_rand"])
        rows["v_rand_thinned"].append(foreground_restricted_scores(thin_boundaries(cells), true_cells)["v_rand"])
    return {"thresholds": np.asarray(thresholds, dtype=np.float64), **{k: np.asarray(v) for k, v in rows.items()}}


def challenge_scores(sweeps: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """The leaderboard's pixel and Rand errors of a stack of sections from their :func:`threshold_sweep`.

    Returns:
        ``pixel_error`` (1 - maximal F-score of cell pixels, counts summed over the sections) and
        ``pixel_threshold``; ``rand_error`` (1 - maximal mean V_Rand) and ``rand_threshold``;
        ``rand_error_thinned`` and ``rand_threshold_thinned``, the same after border thinning; and
        ``misclassified_at_pixel_threshold``, the plain fraction of wrong pixels at that threshold.

    Raises:
        ValueError: no sweeps, or sweeps over different thresholds.
    """
    if not sweeps:
        raise ValueError("challenge_scores needs at least one threshold sweep.")
    thresholds = sweeps[0]["thresholds"]
    if any(not np.array_equal(s["thresholds"], thresholds) for s in sweeps):
        raise ValueError("every sweep must use the same thresholds.")
    tp, fp, fn = (
        np.sum([s[k] for s in sweeps], axis=0) for k in ("true_positives", "false_positives", "false_negatives")
    )
    fscore = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    v_rand = np.mean([s["v_rand"] for s in sweeps], axis=0)
    misclassified = np.mean([s["misclassified"] for s in sweeps], axis=0)
    best_pixel, best_rand = int(np.argmax(fscore)), int(np.argmax(v_rand))
    scores = {
        "pixel_error": float(1.0 - fscore[best_pixel]),
        "pixel_threshold": float(thresholds[best_pixel]),
        "misclassified_at_pixel_threshold": float(misclassified[best_pixel]),
        "rand_error": float(1.0 - v_rand[best_rand]),
        "rand_threshold": float(thresholds[best_rand]),
    }
    v_rand_thinned = np.mean([s["v_rand_thinned"] for s in sweeps], axis=0)
    best_thinned = int(np.argmax(v_rand_thinned))
    scores["rand_error_thinned"] = float(1.0 - v_rand_thinned[best_thinned])
    scores["rand_threshold_thinned"] = float(thresholds[best_thinned])
    return scores
