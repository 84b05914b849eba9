"""The planner's rules, each against its outcome worked out by hand (nnU-Net v2's rules, valid PaperUNet)."""

from __future__ import annotations

from typing import Any

import pytest

from unet_monai.networks import PaperUNet
from unet_monai.planning import plan, pooling_plan, target_spacing, valid_output_at_most
from unet_monai.planning.memory import estimate_training_memory_mb

STATS = {"mean": 80.0, "std": 30.0, "median": 82.0, "min": -100.0, "max": 300.0, "percentile_00_5": -20.0,
         "percentile_99_5": 150.0, "num_samples": 10000}  # fmt: skip


def fingerprint(
    spacings: list[list[float]],
    shapes: list[list[int]],
    modality: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    ignore_label: int | None = None,
) -> dict[str, Any]:
    """A fingerprint as fingerprint_datalist writes it (the keys plan reads), without files."""
    modality = modality or {"0": "CT"}
    return {
        "spatial_dims": len(shapes[0]),
        "in_channels": len(modality),
        "labels": labels or {"0": "background", "1": "organ"},
        "ignore_label": ignore_label,
        "spacings": spacings,
        "shapes": shapes,
        "modality": modality,
        "foreground_intensity": [STATS] * len(modality),
        "manifest": "/data/set.json",
    }


@pytest.mark.parametrize(
    ("spacings", "shapes", "expected"),
    [
        ([[1.0, 1.0, 1.0], [1.5, 1.5, 1.5], [2.0, 2.0, 2.0]], [[100] * 3] * 3, [1.5, 1.5, 1.5]),
        # 5 mm > 3 x 0.8 mm and 30 x 3 < 200 voxels: the 10th percentile of (3, 5, 5, 6) along z = 3.6 mm
        ([[0.8, 0.8, 3.0], [0.8, 0.8, 5.0], [0.8, 0.8, 5.0], [0.8, 0.8, 6.0]], [[200, 200, 30]] * 4, [0.8, 0.8, 3.6]),
        # anisotropic spacing but as many voxels along z: nnU-Net keeps the median
        ([[0.8, 0.8, 3.0], [0.8, 0.8, 5.0], [0.8, 0.8, 6.0]], [[200, 200, 100]] * 3, [0.8, 0.8, 5.0]),
        # the 10th percentile (0.5 mm) would be finer than the other axes (1.0 mm): 1.0 + 1e-5
        ([[1.0, 1.0, 0.5]] * 2 + [[1.0, 1.0, 5.0]] * 3, [[200, 200, 30]] * 5, [1.0, 1.0, 1.00001]),
    ],
    ids=["isotropic-median", "anisotropic-10th-percentile", "thick-but-many-slices", "not-finer-than-in-plane"],
)
def test_target_spacing(spacings: list, shapes: list, expected: list[float]) -> None:
    spacing, reason = target_spacing(spacings, shapes)
    assert spacing == pytest.approx(expected)
    assert ("anisotropic" in reason) == (expected != [1.5, 1.5, 1.5] and expected[2] != 5.0)


def test_pooling_plan_for_thick_slices() -> None:
    # 0.8 x 0.8 x 5 mm, 164 x 166 x 26: x, y pooled alone until their spacing (3.2 mm) is within 2x of z's 5 mm;
    # z's kernel is 1 until then; x, y go on alone once z is down to 7 voxels (< 8); stop below 8 everywhere
    pools, kernels = pooling_plan([0.8, 0.8, 5.0], [164, 166, 26])
    assert pools == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    PaperUNet(3, 1, 2, features=[1] * 6, pool_sizes=pools, kernel_sizes=kernels)  # the network takes them


def test_pooling_plan_isotropic_stops_at_the_feature_map_minimum() -> None:
    # z: 40 -> 20 -> 10 -> 5 (< 8: stops); then x, y: 16, 12 -> 8, 6; x alone would need >= 12: stop
    pools, kernels = pooling_plan([1.0, 1.0, 1.0], [128, 96, 40])
    assert pools == [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 3]] * 5


def test_valid_output_at_most_is_the_largest_output_within() -> None:
    net = PaperUNet(3, 1, 2, features=[1] * 4, pool_sizes=[[2, 2, 1], [2, 2, 1], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]])  # fmt: skip
    out = valid_output_at_most(net, (56, 57, 14))
    assert out == (52, 52, 14)  # outputs 4 + 8n in x, y (3 poolings), even along z (one pooling)
    assert net.output_shape(net.input_shape_for(out)) == out
    assert net.output_shape(net.input_shape_for((53, 53, 15))) == (60, 60, 16)  # the next ones exceed


def test_plan_follows_the_rules_for_thick_slices() -> None:
    fp = fingerprint([[0.8, 0.8, 5.0], [0.8, 0.8, 4.0], [0.7, 0.7, 5.0]], [[60, 56, 12], [56, 60, 14], [64, 64, 12]])
    p = plan(fp, memory_budget_mb=8192)
    assert p["target_spacing"] == pytest.approx([0.8, 0.8, 4.2])
    assert p["median_shape"] == [56, 56, 14]  # (60, 56, 14), (56, 60, 13), (56, 56, 14) after resampling
    assert p["pool_sizes"] == [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    assert p["kernel_sizes"] == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]
    assert p["features"] == [32, 64, 128, 256]
    assert p["output_patch_size"] == [52, 52, 14] and p["input_patch_size"] == [140, 140, 30]
    assert p["context"] == [44, 44, 8]  # below the smallest case (56, 56, 13) after resampling
    assert not any("dropped" in r for r in p["reasons"])
    assert p["batch_size"] == 2  # 5 % of the data set's 134,624 voxels is less than one patch
    assert p["estimated_memory_mb"] <= 8192
    assert p["schemes"] == [{"scheme": "ct", "clip": [-20.0, 150.0], "mean": 80.0, "std": 30.0}]
    assert p["in_channels"] == 1 and p["num_classes"] == 2 and p["class_names"] == {"0": "background", "1": "organ"}


def test_a_smaller_budget_shrinks_the_patch_along_the_largest_axis_first() -> None:
    fp = fingerprint([[1.0, 1.0, 1.0]] * 3, [[96, 96, 96]] * 3)
    large, small = plan(fp, memory_budget_mb=8192), plan(fp, memory_budget_mb=1500)
    assert small["estimated_memory_mb"] <= 1500 < large["estimated_memory_mb"]
    assert all(s <= lg for s, lg in zip(small["output_patch_size"], large["output_patch_size"]))
    assert max(small["output_patch_size"]) - min(small["output_patch_size"]) <= 8  # shrunk in turn, ~isotropic
    assert any("shrunk" in r for r in small["reasons"])
    inp = small["input_patch_size"]
    assert estimate_training_memory_mb(inp, 1, 2, small["features"], small["pool_sizes"], small["kernel_sizes"],
                                       batch_size=2) <= 1500  # fmt: skip


def test_spare_budget_raises_the_batch_size_up_to_five_percent_of_the_data() -> None:
    fp = fingerprint([[1.0, 1.0]] * 100, [[64, 64]] * 100)  # 2D: 409,600 pixels
    p = plan(fp, memory_budget_mb=8192)
    assert p["batch_size"] == round(0.05 * 100 * 64 * 64 / (p["output_patch_size"][0] * p["output_patch_size"][1]))
    assert p["batch_size"] > 2


def test_depth_keeps_the_context_below_the_smallest_case() -> None:
    # 512 x 512 at 1 mm: nnU-Net's rule pools 7 times (512 -> 4), the valid net's context would be 764 per side;
    # the mirroring in training needs context < 512: 6 poolings (context 380)
    p = plan(fingerprint([[1.0, 1.0]] * 3, [[512, 512]] * 3))
    assert pooling_plan([1.0, 1.0], [512, 512])[0] == [[2, 2]] * 7
    assert p["pool_sizes"] == [[2, 2]] * 6 and p["context"] == [380, 380]
    assert any("dropped" in r for r in p["reasons"])


def test_one_case_keeps_the_context_below_half_its_size() -> None:
    # the SCT T2 crop (60 x 55 x 52 voxels, isotropic): pooling stops at 4 voxels, 3 poolings, context 44 per side;
    # that is < 52 (a data set of such cases keeps it) but every voxel of one case would see a mirrored seam:
    # one case drops to 2 poolings, context 20 < 26
    shape = [60, 55, 52]
    many = plan(fingerprint([[1.0, 1.0, 1.0]] * 3, [shape] * 3))
    assert len(many["pool_sizes"]) == 3 and many["context"] == [44, 44, 44]
    # (a patch of the whole case, so that pooling_plan alone would pool 3 times)
    one = plan(fingerprint([[1.0, 1.0, 1.0]], [shape]), max_patch_fraction=1.0)
    assert one["pool_sizes"] == [[2, 2, 2]] * 2 and one["context"] == [20, 20, 20]
    assert any("0.5 x the smallest case" in r for r in one["reasons"])
    loose = plan(fingerprint([[1.0, 1.0, 1.0]], [shape]), max_context_fraction=1.0, max_patch_fraction=1.0)
    assert loose["context"] == [44, 44, 44]


def test_one_case_trains_on_crops_of_at_most_half_its_size() -> None:
    # a data set's patch may reach the median shape (nnU-Net); one case's patch at most half of it, so that the
    # steps see crops at varied positions: valid outputs of the 2-pooling net are 4 + 4n, the largest <= 30, 27, 26
    shape = [60, 55, 52]
    many = plan(fingerprint([[1.0, 1.0, 1.0]] * 3, [shape] * 3))
    assert all(o > s // 2 for o, s in zip(many["output_patch_size"], shape))
    one = plan(fingerprint([[1.0, 1.0, 1.0]], [shape]))
    assert one["output_patch_size"] == [28, 24, 24]
    assert any("0.5 x the median shape" in r for r in one["reasons"])
    whole = plan(fingerprint([[1.0, 1.0, 1.0]], [shape]), max_patch_fraction=1.0)
    assert whole["output_patch_size"] == [60, 52, 52]


@pytest.mark.parametrize("name", ["max_context_fraction", "max_patch_fraction"])
@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_a_fraction_outside_0_1_is_refused(name: str, fraction: float) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be in \(0, 1\], got {fraction}"):
        plan(fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]]), **{name: fraction})


def test_cases_smaller_than_the_patch_are_named() -> None:
    fp = fingerprint([[1.0, 1.0, 1.0]] * 3, [[64, 64, 64], [64, 64, 64], [64, 64, 20]])  # median z 64, one case 20
    with pytest.warns(RuntimeWarning, match=r"1 case\(s\) \(2\) are smaller than the output patch"):
        p = plan(fp)
    assert p["output_patch_size"][2] > 20


def test_a_budget_below_the_smallest_patch_is_refused() -> None:
    fp = fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]])
    with pytest.raises(ValueError, match=r"memory_budget_mb must hold the smallest output patch .* MiB, got 10"):
        plan(fp, memory_budget_mb=10)


@pytest.mark.parametrize(
    ("modality", "schemes"),
    [({"0": "MRI"}, ["mr_nonzero"]), ({"0": "ct"}, ["ct"]), ({"0": "T2", "1": "CT"}, ["mr_nonzero", "ct"])],
    ids=["mr", "ct-lower-case", "mr-and-ct"],
)
def test_normalisation_per_channel_from_the_modality(modality: dict[str, str], schemes: list[str]) -> None:
    p = plan(fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]], modality=modality))
    assert [s["scheme"] for s in p["schemes"]] == schemes
    assert p["in_channels"] == len(schemes)


def test_classes_leave_out_the_ignore_value_and_flag_gaps() -> None:
    labels = {"0": "background", "1": "liver", "3": "spleen", "255": "ignore"}
    p = plan(fingerprint([[1.0, 1.0, 1.0]], [[64, 64, 64]], labels=labels, ignore_label=255))
    assert p["num_classes"] == 3 and p["class_names"] == {"0": "background", "1": "liver", "3": "spleen"}
    assert any("MapLabelValued" in r for r in p["reasons"])
