"""Foreground-restricted Rand and information-theoretic scores (V_Rand, V_Info) of the ISBI 2012 challenge.

Arganda-Carreras et al. (2015), "Crowdsourcing the creation of image segmentation algorithms for connectomics",
Frontiers in Neuroanatomy 9:142. A segmentation S is compared with the ground truth T through the joint
distribution p_ij of their labels over the pixels where T is foreground (inside a cell, not on a membrane):

- V_Rand_split = sum p_ij^2 / sum t_j^2, V_Rand_merge = sum p_ij^2 / sum s_i^2, and V_Rand their harmonic mean
  2 sum p_ij^2 / (sum s_i^2 + sum t_j^2); the Rand error of the leaderboard is 1 - V_Rand.
- V_Info_split = I(S;T) / H(S), V_Info_merge = I(S;T) / H(T), and V_Info = 2 I(S;T) / (H(S) + H(T)).

Pixels that S marks as boundary (label 0) inside T's foreground count as singleton segments, as in the
challenge's and the SNEMI3D/CREMI evaluation code (here counted exactly: each adds (1/n)^2 to sum p_ij^2 and
to sum s_i^2). skimage's ``adapted_rand_error`` differs: it merges those pixels into one segment.

The leaderboard's final, official scores are these *after border thinning* (V_Rand(thinned), V_Info(thinned);
Fiji's "Segmentation evaluation after border thinning" script): the retrospective evaluation found the plain
scores too sensitive to how thick a method draws its membranes. ``thin_boundaries`` gives each boundary pixel of
the segmentation the label of its nearest segment, as the organisers' Python scoring code does ("boundaries are
thinned until gone"); Fiji thins them to one pixel instead, which leaves a one-pixel line of singletons.

Written here (numpy + scipy only) because neither MONAI nor torch has these scores.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["cells_from_boundaries", "thin_boundaries", "foreground_restricted_scores", "em_segmentation_scores"]


def cells_from_boundaries(boundary: np.ndarray) -> np.ndarray:
    """Label the cells of a boundary map: connected components (face-connected) of its non-boundary pixels.

    Args:
        boundary: boolean array ``(H, W[, D])``, True on membranes (boundaries).

    Returns:
        int32 array of the same shape: 0 on boundaries, 1..K for the K cells.
    """
    cells, _ = ndimage.label(~np.asarray(boundary, dtype=bool))
    return cells.astype(np.int32, copy=False)


def thin_boundaries(segmentation: np.ndarray) -> np.ndarray:
    """Border thinning of the ISBI 2012 scores: every boundary pixel (label 0) takes the label of the nearest
    segment pixel (Euclidean distance), so that membranes drawn thicker than the truth's do not count as splits.

    Args:
        segmentation: integer labels ``(H, W[, D])``, 0 = boundary.

    Returns:
        labels of the same shape and dtype with no 0 left; all ones if ``segmentation`` has no segment (the
        whole image is boundary, which thins to one segment).
    """
    seg = np.asarray(segmentation)
    boundary = seg == 0
    if not boundary.any():
        return seg.copy()
    if boundary.all():
        return np.ones_like(seg)
    nearest = ndimage.distance_transform_edt(boundary, return_distances=False, return_indices=True)
    return seg[tuple(nearest)]


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def foreground_restricted_scores(segmentation: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """V_Rand and V_Info (with their split and merge parts) of a segmentation against the ground truth.

    Args:
        segmentation: integer labels ``(H, W[, D])``; 0 = boundary (each such pixel is its own segment).
        truth: integer labels of the same shape; 0 = boundary, excluded from the scores.

    Returns:
        ``v_rand``, ``v_rand_split``, ``v_rand_merge``, ``v_info``, ``v_info_split``, ``v_info_merge``, all in
        [0, 1], 1 = perfect. NaN when the truth has no foreground.

    Raises:
        ValueError: the shapes differ, or labels are negative.
    """
    seg = np.asarray(segmentation)
    gt = np.asarray(truth)
    if seg.shape != gt.shape:
        raise ValueError(f"segmentation shape {seg.shape} differs from truth shape {gt.shape}.")
    fg = gt != 0
    n = int(fg.sum())
    keys = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split", "v_info_merge")
    if n == 0:
        return dict.fromkeys(keys, float("nan"))
    s = seg[fg].astype(np.int64, copy=False)
    t = gt[fg].astype(np.int64, copy=False)
    if s.min() < 0 or t.min() < 0:
        raise ValueError("labels must be non-negative integers.")
    singles = int((s == 0).sum())
    s_in = s[s != 0]
    # joint counts of (segment, true cell) pairs over pixels where both are foreground
    _, t_codes = np.unique(t, return_inverse=True)
    t_codes_in = t_codes[s != 0]
    pair = np.unique(s_in * (int(t_codes.max()) + 1) + t_codes_in, return_counts=True)[1]
    s_counts = np.unique(s_in, return_counts=True)[1]
    t_counts = np.unique(t, return_counts=True)[1]
    sum_pij2 = (float((pair.astype(np.float64) ** 2).sum()) + singles) / n**2
    sum_s2 = (float((s_counts.astype(np.float64) ** 2).sum()) + singles) / n**2
    sum_t2 = float((t_counts.astype(np.float64) ** 2).sum()) / n**2
    single_entropy = singles * np.log(n) / n  # each singleton: -(1/n) log(1/n)
    h_s = _entropy(s_counts, n) + single_entropy
    h_t = _entropy(t_counts, n)
    h_st = _entropy(pair, n) + single_entropy
    mutual = h_s + h_t - h_st
    return {
        "v_rand": 2 * sum_pij2 / (sum_s2 + sum_t2),
        "v_rand_split": sum_pij2 / sum_t2,
        "v_rand_merge": sum_pij2 / sum_s2,
        "v_info": 2 * mutual / (h_s + h_t) if h_s + h_t > 0 else 1.0,
        "v_info_split": mutual / h_s if h_s > 0 else 1.0,
        "v_info_merge": mutual / h_t if h_t > 0 else 1.0,
    }


def em_segmentation_scores(pred_boundary: np.ndarray, true_boundary: np.ndarray) -> dict[str, float]:
    """ISBI 2012 scores of a predicted membrane map: pixel error, Rand error and V_Rand / V_Info.

    Cells are the connected components of the non-membrane pixels of each map (``cells_from_boundaries``).

    Args:
        pred_boundary: boolean ``(H, W[, D])``, True where membrane is predicted.
        true_boundary: boolean, same shape, True on true membranes.

    Returns:
        ``pixel_error`` (fraction of pixels whose membrane/cell class is wrong), ``rand_error``
        (1 - V_Rand), the keys of ``foreground_restricted_scores``, and ``rand_error_thinned``, ``v_rand_thinned``
        and ``v_info_thinned``, the same after border thinning (``thin_boundaries``).
    """
    pred = np.asarray(pred_boundary, dtype=bool)
    true = np.asarray(true_boundary, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"predicted boundary shape {pred.shape} differs from true boundary shape {true.shape}.")
    cells, true_cells = cells_from_boundaries(pred), cells_from_boundaries(true)
    scores = foreground_restricted_scores(cells, true_cells)
    thinned = foreground_restricted_scores(thin_boundaries(cells), true_cells)
    return {
        "pixel_error": float((pred != true).mean()),
        "rand_error": 1.0 - scores["v_rand"],
        **scores,
        "rand_error_thinned": 1.0 - thinned["v_rand"],
        "v_rand_thinned": thinned["v_rand"],
        "v_info_thinned": thinned["v_info"],
    }
