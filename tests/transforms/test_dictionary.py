"""RandElasticGridd and BorderWeightMapd: one shared deformation for all keys, crop keys, seeding, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCrop, Compose

from unet_monai.transforms import BorderWeightMap, BorderWeightMapd, RandElasticGrid, RandElasticGridd

KEYS = ["image", "label", "weight"]
MODES = ["bilinear", "nearest", "bilinear"]


def sample(spatial: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Image (float), label (uint8 in {0, 1, 2}) and weight map (float) of one spatial shape."""
    label = torch.zeros(spatial, dtype=torch.uint8)
    label[tuple(slice(n // 4, n // 2) for n in spatial)] = 1
    label[tuple(slice(n // 2, 3 * n // 4) for n in spatial)] = 2
    return {"image": torch.randn(2, *spatial), "label": label[None], "weight": torch.rand(1, *spatial) + 1}


def seeded(seed: int, **kwargs) -> RandElasticGridd:
    kwargs.setdefault("keys", KEYS)
    kwargs.setdefault("mode", MODES)
    return RandElasticGridd(**kwargs).set_random_state(seed)


def assert_same(a: dict, b: dict, keys=KEYS) -> None:
    for key in keys:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


SPATIAL = {"2d": (24, 20), "3d": (12, 10, 9)}


# -------------------------------------------------------------------------------- prob = 0, determinism
@pytest.mark.parametrize("case", list(SPATIAL), ids=list(SPATIAL))
def test_prob_zero_leaves_all_keys_unchanged(case):
    data = sample(SPATIAL[case])
    data["other"] = torch.randn(3)
    out = seeded(0, prob=0.0)(data)
    assert_same(out, data, [*KEYS, "other"])


def test_prob_zero_with_spatial_size_crops_every_key_at_one_place():
    spatial, size = (30, 26), (17, 13)
    data = sample(spatial)
    data["image"] = torch.arange(2 * 30 * 26, dtype=torch.float32).reshape(2, *spatial)
    out = seeded(3, prob=0.0, spatial_size=size)(data)
    start = np.unravel_index(int(out["image"][0, 0, 0]), spatial)
    region = (slice(None), slice(start[0], start[0] + size[0]), slice(start[1], start[1] + size[1]))
    for key in KEYS:
        assert torch.equal(out[key], data[key][region]), key


@pytest.mark.parametrize("case", list(SPATIAL), ids=list(SPATIAL))
def test_same_seed_same_output(case):
    data = sample(SPATIAL[case])
    assert_same(seeded(11, sigma=3.0)(data), seeded(11, sigma=3.0)(data))


def test_different_seeds_differ():
    data = sample(SPATIAL["2d"])
    out_a, out_b = seeded(1, sigma=3.0)(data), seeded(2, sigma=3.0)(data)
    for key in KEYS:
        assert not torch.equal(out_a[key], out_b[key]), key


def test_compose_set_random_state_is_deterministic():
    data = sample(SPATIAL["2d"])

    def pipeline(seed: int) -> Compose:
        return Compose([RandElasticGridd(KEYS, sigma=3.0, mode=MODES)]).set_random_state(seed)

    assert_same(pipeline(5)(data), pipeline(5)(data))
    assert not torch.equal(pipeline(5)(data)["image"], pipeline(6)(data)["image"])


def test_dictionary_equals_array_transform_for_same_seed():
    """One shared draw, the same as the array transform's: keys are deformed exactly as RandElasticGrid would."""
    data = sample((30, 26))
    kwargs = {"sigma": 4.0, "spatial_size": (20, 18), "grid_size": 4}
    out = seeded(8, **kwargs)(data)
    array = RandElasticGrid(**kwargs)
    array.set_random_state(8)
    expected_image = array(data["image"])
    expected_label = array(data["label"], mode="nearest", randomize=False)
    assert torch.equal(out["image"], expected_image)
    assert torch.equal(out["label"], expected_label)


# ---------------------------------------------------------------------------------------------- alignment
def ball(spatial: tuple[int, ...], radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A centred disc / ball: image with a one-voxel linear edge (0.5 on the radius) and its uint8 mask."""
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in spatial]
    r = torch.stack(torch.meshgrid(*axes, indexing="ij")).pow(2).sum(0).sqrt()
    return (radius + 0.5 - r).clamp(0, 1)[None], (r <= radius).to(torch.uint8)[None]


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


ALIGN = {"2d": ((64, 64), 18.0, 10.0), "3d": ((40, 40, 40), 14.0, 4.0)}


@pytest.mark.parametrize("case", list(ALIGN), ids=list(ALIGN))
def test_image_and_label_stay_aligned(case):
    spatial, radius, sigma = ALIGN[case]
    image, mask = ball(spatial, radius)
    for seed in range(3):
        out = seeded(seed, keys=["image", "label"], mode=["bilinear", "nearest"], sigma=sigma)(
            {"image": image, "label": mask}
        )
        assert dice(out["image"] > 0.5, out["label"]) >= 0.97


@pytest.mark.parametrize("case", list(ALIGN), ids=list(ALIGN))
def test_image_and_label_stay_aligned_under_rotation_and_scale(case):
    """An off-centre disc / ball turns and scales with its mask, and it does move."""
    spatial, radius, _ = ALIGN[case]
    image, mask = ball(spatial, radius / 2)
    shift = tuple(n // 5 for n in spatial)
    image, mask = (
        image.roll(shift, dims=tuple(range(1, len(spatial) + 1))),
        mask.roll(shift, dims=tuple(range(1, len(spatial) + 1))),
    )
    for seed in range(3):
        out = seeded(
            seed, keys=["image", "label"], mode=["bilinear", "nearest"], sigma=0.0, rotate_range=0.6, scale_range=0.25
        )({"image": image, "label": mask})
        assert dice(out["image"] > 0.5, out["label"]) >= 0.95
        assert dice(out["label"], mask) < 0.97  # moved: the disc is off the centre of rotation and scale


def test_deformation_is_not_identity():
    """sigma = 10 on 64 x 64 (the paper's setting) moves the disc's outline by several voxels."""
    image, mask = ball((64, 64), 18.0)
    for seed in range(3):
        out = seeded(seed, keys=["image", "label"], mode=["bilinear", "nearest"], sigma=10.0)(
            {"image": image, "label": mask}
        )
        assert 1 - dice(out["label"], mask) > 0.1


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64], ids=["uint8", "int64"])
def test_label_keeps_dtype_and_values(dtype):
    data = sample((40, 40))
    data["label"] = torch.tensor([0, 3, 7])[data["label"].long()].to(dtype)  # classes 0, 1, 2 -> 0, 3, 7
    out = seeded(0, sigma=4.0)(data)
    assert out["label"].dtype == dtype
    assert set(out["label"].unique().tolist()) == {0, 3, 7}
    assert out["image"].dtype == torch.float32


# -------------------------------------------------------------------------------------------- crop_keys
CROPS = {"2d": ((40, 36), (30, 28), (20, 14)), "3d": ((20, 18, 16), (16, 14, 12), (8, 10, 6))}


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_crop_keys_shapes(case):
    spatial, size, crop = CROPS[case]
    out = seeded(0, spatial_size=size, crop_keys=["label", "weight"], crop_size=crop)(sample(spatial))
    assert out["image"].shape == (2, *size)
    assert out["label"].shape == (1, *crop)
    assert out["weight"].shape == (1, *crop)


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_crop_keys_equal_centre_crop_of_full_patch(case):
    spatial, size, crop = CROPS[case]
    data = sample(spatial)
    for seed in range(3):
        full = seeded(seed, sigma=4.0, spatial_size=size)(data)
        cropped = seeded(seed, sigma=4.0, spatial_size=size, crop_keys=["label", "weight"], crop_size=crop)(data)
        assert torch.equal(cropped["image"], full["image"])
        for key in ("label", "weight"):
            expected = CenterSpatialCrop(crop)(full[key]).as_tensor()
            torch.testing.assert_close(cropped[key], expected, atol=1e-4, rtol=0)


def test_crop_keys_affine_is_patch_affine_translated_by_offset():
    spatial, size, crop = CROPS["3d"]
    affine = torch.diag(torch.tensor([0.7, 1.2, 2.5, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([3.0, -1.0, 12.0], dtype=torch.float64)
    data = {key: MetaTensor(value, affine=affine) for key, value in sample(spatial).items()}
    out = seeded(2, spatial_size=size, crop_keys="label", crop_size=crop)(data)
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = torch.tensor([(s - c) / 2 for s, c in zip(size, crop)], dtype=torch.float64)
    torch.testing.assert_close(out["label"].affine, out["image"].affine @ shift)
    torch.testing.assert_close(out["weight"].affine, out["image"].affine)


def test_allow_missing_keys_skips_absent_keys():
    data = sample(SPATIAL["2d"])
    del data["weight"]
    out = seeded(0, allow_missing_keys=True)(data)
    assert set(out) == {"image", "label"}
    with pytest.raises(KeyError):
        seeded(0)(data)


def test_crop_keys_without_crop_size_rejected():
    with pytest.raises(ValueError, match=r"crop_size must be given with crop_keys \['label'\]"):
        RandElasticGridd(KEYS, crop_keys="label")


def test_bicubic_key_rejected_for_3d():
    with pytest.raises(ValueError, match="'bicubic' only in 2D.*got 'bicubic' for 3D"):
        seeded(0, mode=["bicubic", "nearest", "bilinear"])(sample(SPATIAL["3d"]))


# -------------------------------------------------------------------------------------- BorderWeightMapd
def two_cells() -> torch.Tensor:
    label = torch.zeros(1, 12, 16, dtype=torch.uint8)
    label[0, 3:9, 2:6] = 1
    label[0, 3:9, 9:14] = 1
    return label


def test_border_weight_mapd_writes_weight_and_keeps_label():
    label = two_cells()
    out = BorderWeightMapd("label")({"label": label})
    assert set(out) == {"label", "weight"}
    assert torch.equal(out["label"], label)
    assert out["weight"].shape == label.shape and out["weight"].dtype == torch.float32
    torch.testing.assert_close(out["weight"], BorderWeightMap()(label))


def test_border_weight_mapd_keeps_metatensor_meta():
    affine = torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64))
    label = MetaTensor(two_cells(), affine=affine, meta={"filename_or_obj": "cells.nii.gz"})
    out = BorderWeightMapd("label", units="mm", sigma=2.5)({"label": label})
    assert isinstance(out["weight"], MetaTensor)
    torch.testing.assert_close(out["weight"].affine, affine)
    assert out["weight"].meta["filename_or_obj"] == "cells.nii.gz"
    torch.testing.assert_close(out["weight"].as_tensor(), BorderWeightMap(sigma=5.0)(two_cells()))


def test_border_weight_mapd_output_and_cells_keys():
    label = torch.zeros(1, 8, 10, dtype=torch.uint8)
    label[0, 2:6, 2:8] = 1
    cells = torch.zeros_like(label)
    cells[0, 2:6, 2:5], cells[0, 2:6, 5:8] = 1, 2  # two touching instances: one component of the label
    out = BorderWeightMapd("label", output_keys="w", cells_keys="cells")({"label": label, "cells": cells})
    torch.testing.assert_close(out["w"], BorderWeightMap()(label, cells))
    assert not torch.allclose(out["w"], BorderWeightMap()(label))
