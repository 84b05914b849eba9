"""MirrorPadd against numpy's reflect pad (past the axis size, up to a patch size); MaskIgnoredd on hand-made labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import BorderPadd

from unet_monai.transforms import MaskIgnoredd, MirrorPadd


def test_mirror_pad_equals_monai_where_monai_works_and_numpy_beyond() -> None:
    x = torch.arange(2 * 7 * 6 * 5, dtype=torch.float32).reshape(2, 7, 6, 5)
    ours = MirrorPadd("x", spatial_border=3)({"x": MetaTensor(x)})["x"]
    monai = BorderPadd("x", spatial_border=3, mode="reflect")({"x": MetaTensor(x)})["x"]
    assert torch.equal(torch.as_tensor(ours), torch.as_tensor(monai)) and isinstance(ours, MetaTensor)
    wide = MirrorPadd("x", spatial_border=(2, 9, 12))({"x": x})["x"]  # wider than the axes: mirrored again
    expected = np.pad(x.numpy(), [(0, 0), (2, 2), (9, 9), (12, 12)], mode="reflect")
    np.testing.assert_array_equal(wide.numpy(), expected)
    with pytest.raises(ValueError, match="spatial_border"):
        MirrorPadd("x", spatial_border=(1, 2))({"x": x})
    with pytest.raises(ValueError, match=r"spatial_border must be >= 0.*got -1"):
        MirrorPadd("x", spatial_border=-1)({"x": x})


def test_mirror_pad_grows_an_axis_shorter_than_the_patch_evenly_on_both_sides() -> None:
    x = torch.arange(1 * 7 * 6 * 5, dtype=torch.float32).reshape(1, 7, 6, 5)
    # border 2 gives (11, 10, 9); the patch needs (11, 15, 20): axis 1 gets 5 more (2 + 3), axis 2 gets 11 (5 + 6)
    out = MirrorPadd("x", spatial_border=2, min_spatial_size=(11, 15, 20))({"x": x})["x"]
    expected = np.pad(x.numpy(), [(0, 0), (2, 2), (4, 5), (7, 8)], mode="reflect")
    np.testing.assert_array_equal(out.numpy(), expected)
    larger = MirrorPadd("x", spatial_border=2, min_spatial_size=(3, 3, 3))({"x": x})["x"]  # already large enough
    assert tuple(larger.shape) == (1, 11, 10, 9)
    with pytest.raises(ValueError, match=r"min_spatial_size must have one size per spatial axis \(3\), got \[4, 4\]"):
        MirrorPadd("x", spatial_border=2, min_spatial_size=(4, 4))({"x": x})


def test_mask_ignored_makes_ignored_voxels_true_negatives() -> None:
    label = torch.tensor([[[0, 1], [255, 1]]], dtype=torch.uint8)  # (1, 2, 2)
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, -1.0]]])  # (2, 2, 2): class 1 wins at 3 voxels
    out = MaskIgnoredd("pred", ignore_index=255)({"pred": logits, "label": label})
    assert out["label"].tolist() == [[[0, 1], [0, 1]]]
    assert out["pred"].argmax(0).tolist() == [[1, 1], [0, 0]]  # the ignored voxel is background in both
    same = MaskIgnoredd("pred", ignore_index=None)({"pred": logits, "label": label})
    assert same["pred"] is logits and same["label"] is label
    labels = MaskIgnoredd("pred", ignore_index=255)({"pred": torch.ones(1, 2, 2), "label": label})
    assert labels["pred"].tolist() == [[[1, 1], [0, 1]]]
