"""V_Rand / V_Info against a brute-force reference built from the definitions, and on the ISBI 2012 labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from unet_monai.metrics import (
    case_scores,
    cells_from_boundaries,
    em_segmentation_scores,
    foreground_restricted_scores,
    thin_boundaries,
)

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012"


def reference_scores(seg: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The formulas of Arganda-Carreras et al. 2015 on a dense contingency table; boundary pixels of the
    segmentation inside the truth's foreground become singletons (fresh labels)."""
    fg = gt != 0
    s, t = seg[fg].astype(np.int64), gt[fg].astype(np.int64)
    singles = s == 0
    s = s.copy()
    s[singles] = s.max() + 1 + np.arange(singles.sum())
    s_vals, s_idx = np.unique(s, return_inverse=True)
    t_vals, t_idx = np.unique(t, return_inverse=True)
    p = np.zeros((len(s_vals), len(t_vals)))
    np.add.at(p, (s_idx, t_idx), 1.0)
    p /= p.sum()
    si, tj = p.sum(1), p.sum(0)

    def h(x: np.ndarray) -> float:
        x = x[x > 0]
        return float(-(x * np.log(x)).sum())

    mutual = h(si) + h(tj) - h(p.ravel())
    return {
        "v_rand": 2 * (p**2).sum() / ((si**2).sum() + (tj**2).sum()),
        "v_rand_split": (p**2).sum() / (tj**2).sum(),
        "v_rand_merge": (p**2).sum() / (si**2).sum(),
        "v_info": 2 * mutual / (h(si) + h(tj)),
        "v_info_split": mutual / h(si),
        "v_info_merge": mutual / h(tj),
    }


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_brute_force_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (17, 23) if seed % 2 else (6, 7, 9)
    gt = rng.integers(0, 5, size=shape)
    seg = rng.integers(0, 7, size=shape)
    ours = foreground_restricted_scores(seg, gt)
    ref = reference_scores(seg, gt)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_identical_segmentations_score_one_and_labels_do_not_matter() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(1, 9, size=(30, 30))
    permuted = np.array([0, 5, 3, 8, 1, 2, 7, 6, 4])[gt]  # same partition, other label values
    scores = foreground_restricted_scores(permuted, gt)
    assert all(v == pytest.approx(1.0) for v in scores.values())


def test_split_and_merge_errors_go_to_their_own_parts() -> None:
    gt = np.ones((10, 10), dtype=int)
    split = np.ones((10, 10), dtype=int)
    split[:, 5:] = 2  # one true cell cut in two: a split error, no merge error
    scores = foreground_restricted_scores(split, gt)
    assert scores["v_rand_merge"] == pytest.approx(1.0)
    assert scores["v_rand_split"] == pytest.approx(0.5)
    assert scores["v_info_merge"] == pytest.approx(1.0) and scores["v_info_split"] < 1.0
    merged = foreground_restricted_scores(gt, split)  # the roles swapped: a merge error
    assert merged["v_rand_split"] == pytest.approx(1.0) and merged["v_rand_merge"] == pytest.approx(0.5)


def test_truth_boundary_pixels_are_ignored_and_predicted_boundaries_are_singletons() -> None:
    gt = np.ones((8, 8), dtype=int)
    gt[:, 4] = 0  # a true membrane column, ignored whatever is predicted there
    seg = np.ones((8, 8), dtype=int)
    assert foreground_restricted_scores(seg, gt)["v_rand"] == pytest.approx(1.0)
    seg[0, 0] = 0  # one predicted boundary pixel inside a true cell: a singleton, a small split error
    scores = foreground_restricted_scores(seg, gt)
    assert scores["v_rand_merge"] == pytest.approx(1.0) and scores["v_rand_split"] < 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        foreground_restricted_scores(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="non-negative"):
        foreground_restricted_scores(-np.ones((3, 3), int), np.ones((3, 3), int))
    assert np.isnan(foreground_restricted_scores(np.ones((3, 3), int), np.zeros((3, 3), int))["v_rand"])


def test_cells_are_face_connected_components_of_non_boundary() -> None:
    boundary = np.zeros((5, 5), dtype=bool)
    boundary[2, :] = True
    cells = cells_from_boundaries(boundary)
    assert cells[2].max() == 0 and len(np.unique(cells[:2])) == 1 and cells[0, 0] != cells[4, 0]
    diagonal = ~np.eye(4, dtype=bool)  # cells touching only at corners are separate
    assert cells_from_boundaries(diagonal).max() == 4


def test_thinning_gives_each_boundary_pixel_its_nearest_segment() -> None:
    seg = np.array(
        [
            [1, 1, 0, 0, 0, 2],
            [1, 1, 0, 0, 0, 2],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    thinned = thin_boundaries(seg)
    assert thinned.dtype == seg.dtype and (thinned != 0).all()
    np.testing.assert_array_equal(thinned[:2, :3], 1)  # column 2 is one pixel from 1, three from 2
    np.testing.assert_array_equal(thinned[:2, 4:], 2)
    assert thinned[2, 0] == 1 and thinned[2, 5] == 2
    np.testing.assert_array_equal(thin_boundaries(np.zeros((3, 4), int)), 1)  # all boundary: one segment
    whole = np.arange(1, 13).reshape(3, 4)
    np.testing.assert_array_equal(thin_boundaries(whole), whole)  # no boundary: unchanged


def test_thick_predicted_membrane_is_a_split_error_only_before_thinning() -> None:
    truth = np.zeros((20, 21), dtype=bool)
    truth[:, 10] = True  # two true cells, a one-pixel membrane between them
    thick = np.zeros_like(truth)
    thick[:, 7:14] = True  # the same membrane predicted 7 pixels wide
    scores = em_segmentation_scores(thick, truth)
    assert scores["rand_error"] > 0.1  # 6 x 20 predicted-membrane pixels in true cells: singletons
    assert scores["rand_error_thinned"] == pytest.approx(0.0, abs=1e-12)
    assert scores["v_rand_thinned"] == pytest.approx(1.0) and scores["v_info_thinned"] == pytest.approx(1.0)
    gap = thick.copy()
    gap[5, 7:14] = False  # a hole in the predicted membrane merges the cells, thinned or not
    assert em_segmentation_scores(gap, truth)["rand_error_thinned"] == pytest.approx(1 / 3)  # 2 equal cells as 1


@pytest.mark.skipif(not ISBI.is_dir(), reason=f"shared ISBI 2012 data not found at {ISBI}")
def test_isbi_label_scores_itself_perfectly_and_a_shifted_copy_worse() -> None:
    membrane = np.array(Image.open(ISBI / "train" / "label" / "0.png")) == 0
    perfect = em_segmentation_scores(membrane, membrane)
    assert perfect["pixel_error"] == 0.0 and perfect["rand_error"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["v_info"] == pytest.approx(1.0)
    shifted = em_segmentation_scores(np.roll(membrane, 3, axis=0), membrane)
    assert 0.0 < shifted["pixel_error"] < 0.5 and 0.0 < shifted["rand_error"] < 1.0
    dilated = em_segmentation_scores(ndimage.binary_dilation(membrane, iterations=2), membrane)
    assert dilated["rand_error_thinned"] < 0.5 * dilated["rand_error"]  # thicker membranes: forgiven by thinning
    thin = em_segmentation_scores(np.zeros_like(membrane), membrane)  # no membrane predicted: one giant cell
    assert thin["v_rand_split"] == pytest.approx(1.0) and thin["rand_error"] > 0.9
    assert thin["pixel_error"] == pytest.approx(membrane.mean())


def test_case_scores_gathers_monai_and_em_scores() -> None:
    label = np.zeros((1, 32, 32), dtype=np.uint8)
    label[0, 8:24, 8:24] = 1
    pred = label.copy()
    pred[0, 8:24, 20:24] = 0  # a quarter of the square missed
    scores = case_scores(pred, label, {1: "fg"}, hd95=True, spacing=(2.0, 2.0), boundary_class=1)
    assert scores["dice_fg"] == pytest.approx(2 * 192 / (192 + 256))
    assert scores["iou_fg"] == pytest.approx(192 / 256)
    assert scores["pixel_error"] == pytest.approx(64 / 1024)
    assert scores["hd95_fg"] == pytest.approx(8.0)  # 4 voxels of 2 mm
    assert 0.0 <= scores["rand_error"] <= 1.0 and "v_info" in scores
    with pytest.raises(ValueError, match="shape"):
        case_scores(pred, label[:, :16], {1: "fg"})
