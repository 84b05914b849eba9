"""Foreground-aware patch centres for RandElasticGridd: the fraction of label crops with foreground follows
pos_fraction, every class is drawn, ignored voxels are never centres, the label crop is the centred output window,
2D and 3D, seeded; without a sampler the draws are those of plain RandElasticGridd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader
from monai.transforms import BorderPadd, Compose, EnsureChannelFirstd, Lambdad, LoadImaged

from unet_monai.transforms import (
    ForegroundLocationsd,
    ForegroundSampler,
    RandElasticGrid,
    RandElasticGridd,
    VoxelLocations,
    voxel_locations,
)

# volume, patch (the network's input) and label crop (its output): context (patch - crop) / 2 per side
CASES = {
    "2d": ((96, 96), (28, 28), (12, 12)),
    "3d": ((64, 64, 64), (16, 16, 16), (8, 8, 8)),
}


def volume(spatial: tuple[int, ...], fraction: float = 0.02) -> dict[str, torch.Tensor]:
    """A label with a centred foreground box of about ``fraction`` of the voxels (class 1) and, inside it, a small
    class 2; an image; ``coord`` holds each voxel's flat index, to read where a crop came from."""
    side = [max(2, round(n * fraction ** (1 / len(spatial)))) for n in spatial]
    label = torch.zeros(1, *spatial, dtype=torch.uint8)
    box = tuple(slice(n // 2 - s // 2, n // 2 - s // 2 + s) for n, s in zip(spatial, side))
    label[(0, *box)] = 1
    label[(0, *[slice(b.start, b.start + 2) for b in box])] = 2
    coord = torch.arange(int(np.prod(spatial)), dtype=torch.int64).reshape(1, *spatial)
    return {"image": torch.rand(1, *spatial), "label": label, "coord": coord}


def sampler_transform(case: str, seed: int = 0, **kwargs) -> RandElasticGridd:
    _, patch, crop = CASES[case]
    kwargs.setdefault("prob", 0.0)  # the plain crop: exact positions; the deformation is tested below
    return RandElasticGridd(
        ["image", "label", "coord"],
        spatial_size=patch,
        mode=["bilinear", "nearest", "nearest"],
        crop_keys=["label", "coord"],
        crop_size=crop,
        label_key="label",
        **kwargs,
    ).set_random_state(seed)


def draw(transform: RandElasticGridd, data: dict, n: int) -> list[dict]:
    located = ForegroundLocationsd("label", ignore_index=transform.elastic.center_sampler.ignore_index)(data)
    return [transform(located) for _ in range(n)]


def fg_fraction(outs: list[dict]) -> float:
    return float(np.mean([bool((o["label"] > 0).any()) for o in outs]))


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fraction_of_crops_with_foreground_follows_pos_fraction(case):
    data = volume(CASES[case][0])
    assert 0.01 < float((data["label"] > 0).float().mean()) < 0.03
    n = 600
    uniform = fg_fraction(draw(sampler_transform(case, 1, pos_fraction=0.0), data, n))
    outs = draw(sampler_transform(case, 2, pos_fraction=0.33), data, n)
    expected = 0.33 + 0.67 * uniform  # forced patches always hold foreground; the others as uniform ones
    assert uniform < 0.2  # the 2 % target is rarely hit by uniform patches
    assert abs(fg_fraction(outs) - expected) < 0.06
    assert fg_fraction(draw(sampler_transform(case, 3, pos_fraction=1.0), data, 100)) == 1.0


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_label_crop_is_the_output_window_centred_on_the_chosen_voxel(case):
    spatial, _, crop = CASES[case]
    data = volume(spatial)
    transform = sampler_transform(case, 4, pos_fraction=1.0)
    located = ForegroundLocationsd("label")(data)
    for _ in range(50):
        out = transform(located)
        center = transform.elastic.center_sampler.last_center
        middle = out["coord"][(0, *[c // 2 for c in crop])]
        assert int(middle) == int(np.ravel_multi_index(center, spatial))
        assert int(out["label"][(0, *[c // 2 for c in crop])]) == transform.elastic.center_sampler.last_class
        assert tuple(out["label"].shape[1:]) == crop and tuple(out["image"].shape[1:]) == CASES[case][1]


def test_every_class_is_drawn_about_equally_however_small():
    data = volume(CASES["3d"][0])  # class 2 is 8 voxels, class 1 several hundred
    transform = sampler_transform("3d", 5, pos_fraction=1.0)
    located = ForegroundLocationsd("label")(data)
    drawn = []
    for _ in range(300):
        transform(located)
        drawn.append(transform.elastic.center_sampler.last_class)
    counts = np.bincount(drawn, minlength=3)
    assert counts[0] == 0 and min(counts[1:]) > 110


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_ignored_voxels_are_never_centres_and_every_crop_holds_a_labelled_voxel(case):
    spatial, _, crop = CASES[case]
    data = volume(spatial)
    label = data["label"]
    label[:] = 255  # sparse annotation: only the foreground box and a thin band of background are labelled
    box = volume(spatial)["label"]
    label[box > 0] = box[box > 0]
    band = (0, *[slice(n // 2 - 8, n // 2 + 8) for n in spatial])
    label[band] = torch.where(label[band] == 255, 0, label[band])
    transform = sampler_transform(case, 6, pos_fraction=0.33, ignore_index=255, max_attempts=2)
    outs = draw(transform, data, 200)
    for out in outs:
        assert bool((out["label"] != 255).any())
        assert int(out["label"][(0, *[c // 2 for c in crop])]) != 255 or not _centred(out, transform, spatial, crop)
    # with pos_fraction 1 the centre voxel itself is never ignored
    transform = sampler_transform(case, 7, pos_fraction=1.0, ignore_index=255)
    for out in draw(transform, data, 100):
        assert int(out["label"][(0, *[c // 2 for c in crop])]) in (1, 2)


def _centred(out, transform, spatial, crop) -> bool:
    center = transform.elastic.center_sampler.last_center
    return center is not None and int(out["coord"][(0, *[c // 2 for c in crop])]) == np.ravel_multi_index(
        center, spatial
    )


def test_locations_leave_out_ignored_voxels_and_keep_background_only_with_an_ignore_value():
    label = torch.tensor([[[0, 1, 1], [2, 255, 0]]], dtype=torch.uint8)
    plain = voxel_locations(label)
    assert sorted(plain.classes) == [1, 2, 255] and plain.foreground() == [1, 2, 255]
    ignoring = voxel_locations(label, ignore_index=255)
    assert sorted(ignoring.classes) == [0, 1, 2] and ignoring.foreground() == [1, 2]
    assert ignoring.classes[0].tolist() == [0, 5] and ignoring.classes[1].tolist() == [1, 2]
    sub = voxel_locations(torch.ones(1, 20, 20), max_per_class=7, seed=3)
    assert sub.classes[1].size == 7
    assert np.array_equal(sub.classes[1], voxel_locations(torch.ones(1, 20, 20), max_per_class=7, seed=3).classes[1])


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_same_seed_same_patches_and_different_seeds_differ(case):
    data = volume(CASES[case][0])
    a = [o["coord"] for o in draw(sampler_transform(case, 8, pos_fraction=0.5), data, 20)]
    b = [o["coord"] for o in draw(sampler_transform(case, 8, pos_fraction=0.5), data, 20)]
    c = [o["coord"] for o in draw(sampler_transform(case, 9, pos_fraction=0.5), data, 20)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_deformed_patches_centred_on_foreground_hold_foreground(case):
    data = volume(CASES[case][0])
    transform = sampler_transform(case, 10, prob=1.0, sigma=1.0, pos_fraction=1.0)
    outs = draw(transform, data, 8)
    assert fg_fraction(outs) == 1.0
    assert all(o["image"].shape[1:] == CASES[case][1] for o in outs)


def test_pos_fraction_zero_draws_exactly_as_without_a_sampler():
    data = volume(CASES["2d"][0])
    data["image"] = torch.rand(1, *CASES["2d"][0])
    common = dict(sigma=3.0, spatial_size=(28, 28), mode=["bilinear", "nearest"], crop_keys="label", crop_size=(12, 12))
    plain = RandElasticGridd(["image", "label"], **common).set_random_state(11)
    zero = RandElasticGridd(["image", "label"], **common, label_key="label", pos_fraction=0.0).set_random_state(11)
    for _ in range(3):
        a, b = plain(data), zero(data)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_locations_are_consumed_found_on_the_fly_when_absent_and_must_match_the_volume():
    data = volume(CASES["2d"][0])
    located = ForegroundLocationsd("label")(data)
    cached = sampler_transform("2d", 12, pos_fraction=0.5)
    on_the_fly = sampler_transform("2d", 12, pos_fraction=0.5)
    for _ in range(10):
        a, b = cached(located), on_the_fly(data)
        assert "label_locations" not in a and torch.equal(a["coord"], b["coord"])
    stale = dict(located, label_locations=voxel_locations(torch.zeros(1, 50, 50)))
    with pytest.raises(ValueError, match=r"locations must be of the volume .* \(96, 96\), got \(50, 50\)"):
        cached(stale)
    wrong_ignore = ForegroundLocationsd("label", ignore_index=255)(data)
    with pytest.raises(ValueError, match="must be computed with ignore_index None"):
        cached(wrong_ignore)
    with pytest.raises(KeyError, match="label_key 'label' must be in the data"):
        cached({"image": data["image"]})


def test_batches_collate_through_cache_dataset_and_dataloader():
    spatial, patch, crop = CASES["2d"]
    items = [{k: v for k, v in volume(spatial).items() if k != "coord"} for _ in range(3)]
    transforms = Compose(
        [
            ForegroundLocationsd("label"),
            RandElasticGridd(
                ["image", "label"],
                prob=0.0,
                spatial_size=patch,
                mode=["bilinear", "nearest"],
                crop_keys="label",
                crop_size=crop,
                label_key="label",
                pos_fraction=1.0,
            ),
        ]
    ).set_random_state(0)
    dataset = CacheDataset(items, transforms, progress=False)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["label"].shape == (3, 1, *crop) and bool((batch["label"] > 0).flatten(1).any(1).all())


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match=r"pos_fraction must be in \[0, 1\], got 1.5"):
        ForegroundSampler(1.5)
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        ForegroundSampler(0.3, max_attempts=0)
    with pytest.raises(ValueError, match="locations must be given"):
        RandElasticGrid(spatial_size=(4, 4), center_sampler=ForegroundSampler(0.5)).randomize(spatial_shape=(8, 8))
    assert isinstance(voxel_locations(torch.zeros(1, 3, 3)), VoxelLocations)


SHARED_TS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalsegmentator-examples"


@pytest.mark.skipif(not SHARED_TS.is_dir(), reason=f"shared TotalSegmentator examples not found at {SHARED_TS}")
def test_shared_ct_spleen_is_sampled_at_pos_fraction():
    """The spleen fills 0.7 % of the long TotalSegmentator CT (122 x 101 x 112 voxels of 3 mm); padded by the
    context as the bundle does, a third of the label crops must hold spleen, against a few percent uniformly."""
    patch, crop = (36, 36, 36), (12, 12, 12)
    context = [(p - c) // 2 for p, c in zip(patch, crop)]
    load = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            Lambdad("label", lambda x: (x == 1).to(torch.uint8)),  # class 1 = spleen
            BorderPadd(["image", "label"], spatial_border=context, mode="reflect"),
        ]
    )
    data = load(
        {"image": str(SHARED_TS / "example_ct.nii.gz"), "label": str(SHARED_TS / "example_seg_fast_force_split.nii.gz")}
    )
    located = ForegroundLocationsd("label")(data)

    def fraction(pos_fraction: float, seed: int) -> float:
        transform = RandElasticGridd(
            ["image", "label"],
            prob=0.0,
            spatial_size=patch,
            mode=["bilinear", "nearest"],
            crop_keys="label",
            crop_size=crop,
            label_key="label",
            pos_fraction=pos_fraction,
        ).set_random_state(seed)
        return float(np.mean([bool(transform(located)["label"].any()) for _ in range(400)]))

    uniform, sampled = fraction(0.0, 0), fraction(0.33, 1)
    assert uniform < 0.1
    assert abs(sampled - (0.33 + 0.67 * uniform)) < 0.07


def test_when_redraws_fail_the_patch_is_centred_on_a_labelled_voxel():
    spatial, patch, crop = CASES["2d"]
    data = volume(spatial)
    data["label"][:] = 255
    data["label"][0, 20, 70] = 0  # one labelled (background) voxel
    transform = sampler_transform("2d", 13, pos_fraction=0.0, ignore_index=255, max_attempts=1)
    for out in draw(transform, data, 30):
        assert int((out["label"] == 0).sum()) == 1


def test_a_label_without_labelled_voxels_warns_and_samples_uniformly():
    data = volume(CASES["2d"][0])
    data["label"][:] = 255
    transform = sampler_transform("2d", 14, pos_fraction=0.5, ignore_index=255)
    with pytest.warns(RuntimeWarning, match="holds no labelled voxel"):
        outs = draw(transform, data, 5)
    assert all(tuple(o["label"].shape[1:]) == CASES["2d"][2] for o in outs)


def test_a_bundle_config_builds_the_sampler_from_json():
    config = json.loads(
        """{"patch_size": [28, 28],
        "locate": {"_target_": "unet_monai.transforms.ForegroundLocationsd", "keys": "label", "ignore_index": null},
        "patches": {"_target_": "unet_monai.transforms.RandElasticGridd", "keys": ["image", "label"], "prob": 0.0,
            "spatial_size": "@patch_size", "crop_keys": ["label"], "crop_size": [12, 12],
            "mode": ["bilinear", "nearest"], "label_key": "label", "pos_fraction": 1.0, "ignore_index": null}}"""
    )
    parser = ConfigParser(config)
    pipeline = Compose([parser.get_parsed_content("locate"), parser.get_parsed_content("patches")]).set_random_state(0)
    data = {k: v for k, v in volume(CASES["2d"][0]).items() if k != "coord"}
    assert all(bool(pipeline(data)["label"].any()) for _ in range(20))
