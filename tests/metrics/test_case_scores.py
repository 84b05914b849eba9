"""case_scores: per-class Dice, IoU and HD95 keyed by the class names; an ignore value in the ground truth taken out
of every score (Dice, IoU, pixel error, HD95)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet_monai.io.manifest import manifest_class_names
from unet_monai.metrics import case_scores

IGNORE = 255


def squares() -> tuple[np.ndarray, np.ndarray]:
    """A 3D label with two classes and a prediction that misses a quarter of class 1: ``(1, 16, 16, 8)``."""
    label = np.zeros((1, 16, 16, 8), dtype=np.uint8)
    label[0, 2:10, 2:10, 2:6] = 1
    label[0, 11:15, 11:15, 2:6] = 2
    pred = label.copy()
    pred[0, 2:10, 8:10, 2:6] = 0
    return pred, label


def test_per_class_scores_are_keyed_by_class_name() -> None:
    pred, label = squares()
    scores = case_scores(pred, label, {1: "spleen", 2: "liver"}, hd95=True, spacing=(1.0, 1.0, 2.0))
    assert list(scores) == [
        "dice_spleen",
        "iou_spleen",
        "dice_liver",
        "iou_liver",
        "hd95_spleen",
        "hd95_liver",
        "pixel_error",
    ]
    assert scores["dice_spleen"] == pytest.approx(2 * 192 / (192 + 256))
    assert scores["iou_spleen"] == pytest.approx(192 / 256)
    assert scores["dice_liver"] == scores["iou_liver"] == pytest.approx(1.0)
    assert scores["hd95_spleen"] == pytest.approx(2.0) and scores["hd95_liver"] == pytest.approx(0.0)


def test_string_class_values_from_json_are_accepted() -> None:
    pred, label = squares()
    assert case_scores(pred, label, {"2": "liver"})["dice_liver"] == pytest.approx(1.0)  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "classes,kwargs,match",
    [
        ({1: "a", 2: "a"}, {}, "classes must have distinct names"),
        ({"x": "a"}, {}, "classes must map integer label values to names"),
        ({1: "a", 255: "b"}, {"ignore_index": IGNORE}, "classes must not include the ignore value 255"),
        ({1: "a"}, {"ignore_index": IGNORE, "boundary_class": 1}, "ignore_index must be None with boundary_class"),
    ],
    ids=["repeated-name", "non-integer", "ignore-is-class", "with-boundary-class"],
)
def test_bad_classes_rejected(classes, kwargs, match) -> None:
    pred, label = squares()
    with pytest.raises(ValueError, match=match):
        case_scores(pred, label, classes, **kwargs)


def sparse(label: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ignore every z slice but 3; put gross errors into the prediction where the label is ignored (a far-away
    blob of class 1 and class 2 erased), and make the label there something the prediction gets wrong."""
    sparse_label = np.full_like(label, IGNORE)
    sparse_label[..., 3] = label[..., 3]
    wrong = pred.copy()
    wrong[0, 12:16, 0:4, 7] = 1  # far from class 1, in an ignored slice
    wrong[0, 11:15, 11:15, 4:6] = 0  # class 2 missed in ignored slices
    return sparse_label, wrong


def test_ignored_voxels_are_out_of_dice_iou_and_pixel_error() -> None:
    pred, label = squares()
    sparse_label, wrong = sparse(label, pred)
    classes = {1: "spleen", 2: "liver"}
    scores = case_scores(wrong, sparse_label, classes, ignore_index=IGNORE)
    assert scores["dice_spleen"] == pytest.approx(2 * 48 / (48 + 64))  # slice 3 only: 48 of 64 voxels found
    assert scores["iou_spleen"] == pytest.approx(48 / 64)
    assert scores["dice_liver"] == scores["iou_liver"] == pytest.approx(1.0)
    assert scores["pixel_error"] == pytest.approx(16 / 256)  # 16 missed voxels among the 16 x 16 labelled ones
    on_slice = case_scores(wrong[..., 3], label[..., 3], classes)
    assert {k: scores[k] for k in on_slice} == pytest.approx(on_slice)
    unmasked = case_scores(wrong, sparse_label, classes)
    assert unmasked["pixel_error"] > 0.8  # without the ignore value, 255 counts as a label nobody predicts


def test_ignored_voxels_are_neither_prediction_nor_label_for_hd95() -> None:
    pred, label = squares()
    sparse_label, wrong = sparse(label, pred)
    classes = {1: "spleen", 2: "liver"}
    scores = case_scores(wrong, sparse_label, classes, hd95=True, spacing=(1.0, 1.0, 2.0), ignore_index=IGNORE)
    clean = case_scores(pred, sparse_label, classes, hd95=True, spacing=(1.0, 1.0, 2.0), ignore_index=IGNORE)
    assert scores["hd95_spleen"] == pytest.approx(clean["hd95_spleen"]) == pytest.approx(2.0)
    assert scores["hd95_liver"] == pytest.approx(0.0)
    blob = wrong.copy()
    blob[0, 12:16, 0:4, 3] = 1  # the same far-away blob in the labelled slice does count
    assert case_scores(blob, sparse_label, classes, hd95=True, ignore_index=IGNORE)["hd95_spleen"] > 5.0


def test_no_labelled_voxel_gives_nan_scores() -> None:
    pred, label = squares()
    scores = case_scores(pred, np.full_like(label, IGNORE), {1: "spleen"}, ignore_index=IGNORE)
    assert np.isnan(scores["dice_spleen"]) and np.isnan(scores["pixel_error"])


def test_ignore_index_absent_from_label_changes_nothing() -> None:
    pred, label = squares()
    classes = {1: "spleen", 2: "liver"}
    kwargs = {"hd95": True, "spacing": (1.0, 1.0, 2.0)}
    assert case_scores(pred, label, classes, ignore_index=IGNORE, **kwargs) == case_scores(
        pred, label, classes, **kwargs
    )


REPO = Path(__file__).resolve().parents[2]
TOTALSEG = REPO.parent / "shared" / "data" / "totalsegmentator-examples"


@pytest.mark.skipif(not TOTALSEG.is_dir(), reason=f"shared TotalSegmentator examples not found at {TOTALSEG}")
def test_real_multi_class_label_scored_per_class_with_the_datalists_names() -> None:
    classes = manifest_class_names(REPO / "data_manifests" / "totalsegmentator_examples.json")
    assert classes == {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver"}
    image = nib.load(TOTALSEG / "example_seg.nii.gz")  # 3 mm isotropic
    label = np.asanyarray(image.dataobj)[8:108, 20:89]  # the box around the five named organs (whole z range)
    shifted = np.zeros_like(label)
    shifted[..., 1:] = label[..., :-1]  # one slice (3 mm) off
    spacing = [float(z) for z in image.header.get_zooms()]
    scores = case_scores(shifted, label, classes, spacing=spacing, hd95=True)
    for name in classes.values():
        assert 0.5 < scores[f"dice_{name}"] < 1.0
        assert scores[f"hd95_{name}"] == pytest.approx(3.0)
    perfect = case_scores(label, label, classes)
    assert all(perfect[f"dice_{name}"] == 1.0 for name in classes.values())
