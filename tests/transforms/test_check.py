"""CheckImaged's channel count and CheckPaird's label checks (1 channel, the image's grid within 1e-4 mm, allowed
values), on NIfTI files written to tmp_path and loaded as the bundle loads them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from unet_monai.transforms import CheckImaged, CheckPaird, check_label, grid_distance_mm, label_value_counts

AFFINE = np.array([[0.8, 0, 0, -100.0], [0, 0.8, 0, -80.0], [0, 0, 5.0, 20.0], [0, 0, 0, 1]])


def write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def load(**files: str) -> dict:
    keys = list(files)
    return Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)])(files)


def label_array(shape=(12, 10, 6), values=(0, 1, 2)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        label[i * 2 : i * 2 + 2] = v
    return label


@pytest.fixture
def pair(tmp_path: Path) -> dict:
    return load(
        image=write(tmp_path / "ct.nii.gz", np.zeros((12, 10, 6), np.float32)),
        label=write(tmp_path / "ct_seg.nii.gz", label_array()),
    )


# -------------------------------------------------------------------------------- CheckImaged channels
def test_checkimaged_accepts_the_expected_channels_per_key(tmp_path: Path):
    data = load(
        image=write(tmp_path / "t1t2.nii.gz", np.zeros((12, 10, 6, 2), np.float32)),
        label=write(tmp_path / "seg.nii.gz", label_array()),
    )
    out = CheckImaged(["image", "label"], spatial_dims=3, channels=[2, 1])(data)
    assert out["image"].shape[0] == 2


def test_checkimaged_refuses_a_channel_count_that_differs_naming_file_and_counts(tmp_path: Path):
    data = load(image=write(tmp_path / "case_12_t1.nii.gz", np.zeros((12, 10, 6), np.float32)))
    with pytest.raises(ValueError, match=r"image .*case_12_t1\.nii\.gz must have 2 channel\(s\), got 1"):
        CheckImaged("image", spatial_dims=3, channels=2)(data)


# -------------------------------------------------------------------------------- CheckPaird
def test_checkpaird_passes_a_label_on_the_image_grid(pair):
    out = CheckPaird("label", label_values=[0, 1, 2, 255])(pair)
    assert out["label"] is pair["label"]


def test_label_with_another_shape_names_both_files(tmp_path: Path):
    data = load(
        image=write(tmp_path / "ct.nii.gz", np.zeros((12, 10, 6), np.float32)),
        label=write(tmp_path / "seg_small.nii.gz", label_array((12, 10, 5))),
    )
    with pytest.raises(ValueError, match=r"seg_small\.nii\.gz and image .*ct\.nii\.gz must have one spatial shape"):
        CheckPaird("label")(data)


@pytest.mark.parametrize(
    "shift_mm, ok", [(5e-5, True), (1e-3, False), (0.8, False)], ids=["within", "just-over", "one-voxel"]
)
def test_label_affine_must_agree_within_the_tolerance_in_mm(tmp_path: Path, shift_mm: float, ok: bool):
    moved = AFFINE.copy()
    moved[0, 3] += shift_mm
    data = load(
        image=write(tmp_path / "ct.nii.gz", np.zeros((12, 10, 6), np.float32)),
        label=write(tmp_path / "seg_moved.nii.gz", label_array(), moved),
    )
    if ok:
        CheckPaird("label")(data)
    else:
        with pytest.raises(ValueError, match=r"seg_moved\.nii\.gz and image .*ct\.nii\.gz must lie on one grid"):
            CheckPaird("label")(data)


def test_a_small_spacing_difference_counts_at_the_far_corner():
    scaled = AFFINE.copy()
    scaled[2, 2] += 1e-4  # 5 mm -> 5.0001 mm: 5e-4 mm at the last of 6 slices
    assert grid_distance_mm(AFFINE, scaled, (12, 10, 6)) == pytest.approx(5e-4)
    assert grid_distance_mm(AFFINE, AFFINE, (12, 10, 6)) == 0.0


def test_label_with_two_channels_is_refused(tmp_path: Path):
    data = load(
        image=write(tmp_path / "ct.nii.gz", np.zeros((12, 10, 6), np.float32)),
        label=write(tmp_path / "seg_4d.nii.gz", np.zeros((12, 10, 6, 2), np.uint8)),
    )
    with pytest.raises(ValueError, match=r"seg_4d\.nii\.gz must have exactly 1 channel.*\(2, 12, 10, 6\)"):
        CheckPaird("label")(data)


def test_label_value_not_allowed_names_the_file_and_the_values(tmp_path: Path):
    data = load(
        image=write(tmp_path / "ct.nii.gz", np.zeros((12, 10, 6), np.float32)),
        label=write(tmp_path / "seg_extra.nii.gz", label_array(values=(0, 1, 7, 9))),
    )
    with pytest.raises(
        ValueError, match=r"seg_extra\.nii\.gz must hold only the label values \[0, 1, 2, 255\].*\[7, 9\]"
    ):
        CheckPaird("label", label_values=[0, 1, 2, 255])(data)


def test_missing_image_key_is_an_error_and_no_image_key_skips_the_grid(pair):
    with pytest.raises(KeyError, match="image_key 'scan' must be in the data"):
        CheckPaird("label", image_key="scan")(pair)
    check_label(pair["label"], None)  # no image: only the label's own checks
    with pytest.raises(ValueError, match="tolerance_mm must be >= 0"):
        CheckPaird("label", tolerance_mm=-1)


def test_label_value_counts_counts_integer_and_float_labels_alike():
    label = np.array([[0, 0, 3], [255, 3, 3]], np.uint8)
    assert label_value_counts(label) == {0: 2, 3: 3, 255: 1}
    assert label_value_counts(label.astype(np.float32)) == {0: 2, 3: 3, 255: 1}
    assert label_value_counts(np.array([-1.0, 0.5, 0.5])) == {-1: 1, 0.5: 2}  # the general path


SHARED_TS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalsegmentator-examples"


@pytest.mark.skipif(not SHARED_TS.is_dir(), reason=f"shared TotalSegmentator examples not found at {SHARED_TS}")
def test_shared_totalsegmentator_pairs():
    """The small CT and its 41-class label share a grid; the long CT (112 slices) and that label do not."""
    good = load(image=str(SHARED_TS / "example_ct_sm.nii.gz"), label=str(SHARED_TS / "example_seg.nii.gz"))
    values = sorted(label_value_counts(good["label"]))
    assert len(values) == 42 and values[0] == 0
    CheckPaird("label", label_values=values)(good)
    with pytest.raises(ValueError, match=r"must hold only the label values .*got unknown value\(s\) \[117\]"):
        CheckPaird("label", label_values=[v for v in values if v != 117])(good)
    bad = load(image=str(SHARED_TS / "example_ct.nii.gz"), label=str(SHARED_TS / "example_seg.nii.gz"))
    with pytest.raises(ValueError, match=r"example_seg\.nii\.gz and image .*example_ct\.nii\.gz must have one spatial"):
        CheckPaird("label")(bad)


def test_checkimaged_label_keys_have_one_channel_whatever_channels_says(tmp_path: Path):
    files = {
        "image": write(tmp_path / "t1t2.nii.gz", np.zeros((12, 10, 6, 2), np.float32)),
        "label": write(tmp_path / "seg.nii.gz", label_array()),
    }
    check = CheckImaged(["image", "label"], spatial_dims=3, channels=2, label_keys="label")
    check(load(**files))
    CheckImaged(["image"], spatial_dims=3, channels=2, label_keys="label")(load(image=files["image"]))  # inference
    files["label"] = write(tmp_path / "seg_2ch.nii.gz", np.zeros((12, 10, 6, 2), np.uint8))
    with pytest.raises(ValueError, match=r"label .*seg_2ch\.nii\.gz must have 1 channel\(s\), got 2"):
        check(load(**files))
