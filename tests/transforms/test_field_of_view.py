"""RandFieldOfViewd: a box of the case, of a size drawn in range, inside the case's own voxels, mirrored by the
context exactly as MirrorPadd pads a whole case; foreground centres; locations found anew for the cut; the patch
sampler downstream; the errors; and ``bundles/unet/small_fov.json`` on train.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from unet_monai.transforms import (
    ForegroundLocationsd,
    MirrorPadd,
    RandElasticGridd,
    RandFieldOfViewd,
    VoxelLocations,
    voxel_locations,
)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "unet"
SHAPE, BORDER = (30, 26, 12), (5, 4, 3)


def case(shape: tuple[int, ...] = SHAPE, border: tuple[int, ...] = BORDER) -> tuple[dict, np.ndarray, np.ndarray]:
    """A case padded as train.json pads it (MirrorPadd + ForegroundLocationsd): the image holds each voxel's flat
    index, the label a small class-1 box near the low corner (so its mirror lies in the border) and a class-2 box.
    Returns the padded dict and the unpadded image and label."""
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    label = np.zeros((1, *shape), np.uint8)
    label[0, 1:4, 1:4, 0:2] = 1
    label[0, 20:24, 18:22, 8:10] = 2
    d = {"image": torch.from_numpy(image), "label": torch.from_numpy(label)}
    d = ForegroundLocationsd("label")(MirrorPadd(["image", "label"], border)(d))
    return d, image, label


def test_the_cut_is_a_box_inside_the_case_mirrored_by_the_context() -> None:
    d, image, label = case()
    cut = RandFieldOfViewd(["image", "label"], 6, [10, 9, 8], BORDER, prob=1.0, pos_fraction=0.0)
    sizes = set()
    for seed in range(25):
        cut.set_random_state(seed)
        out = cut(d)
        box = cut.last_box
        assert box is not None
        inner = [(b, b + n) for b, n in zip(BORDER, SHAPE)]
        assert all(lo <= a < z <= hi for (a, z), (lo, hi) in zip(box, inner)), (box, inner)
        size = tuple(z - a for a, z in box)
        assert all(6 <= s <= m for s, m in zip(size, (10, 9, 8)))
        sizes.add(size)
        original = tuple(slice(a - b, z - b) for (a, z), b in zip(box, BORDER))
        widths = [(0, 0)] + [(b, b) for b in BORDER]
        for key, array in (("image", image), ("label", label)):
            expected = np.pad(array[(slice(None), *original)], widths, mode="reflect")
            np.testing.assert_array_equal(out[key].numpy(), expected)
        assert out["image"].data_ptr() != d["image"].data_ptr()
    assert len(sizes) > 5  # sizes are drawn, not fixed


def test_foreground_centres_and_the_locations_of_the_cut() -> None:
    d, _, _ = case()
    cut = RandFieldOfViewd(["image", "label"], 6, 6, BORDER, prob=1.0, pos_fraction=1.0)
    classes = set()
    for seed in range(40):
        cut.set_random_state(seed)
        out = cut(d)
        inside = out["label"][(0, *(slice(b, -b) for b in BORDER))]
        present = set(torch.unique(inside).tolist()) - {0}
        assert present, f"seed {seed}: a foreground-centred box holds no foreground of the case itself"
        classes |= present
        locations = out["label_locations"]
        assert isinstance(locations, VoxelLocations)
        assert locations.spatial_shape == tuple(out["label"].shape[1:])
        fresh = voxel_locations(out["label"])
        assert locations.classes.keys() == fresh.classes.keys()
        assert all(np.array_equal(locations.classes[c], fresh.classes[c]) for c in fresh.classes)
    assert classes == {1, 2}  # every class centres some boxes


def test_prob_zero_passes_the_case_unchanged() -> None:
    d, _, _ = case()
    out = RandFieldOfViewd(["image", "label"], 6, 8, BORDER, prob=0.0)(d)
    assert all(out[k] is d[k] for k in d)


def test_a_small_box_is_mirrored_up_to_the_patch_and_the_sampler_cuts_fixed_patches() -> None:
    """With the patch sampler of train.json after it, a box smaller than the patch still gives whole patches (of
    the network's input size, labels of its output size), and batches collate."""
    d, _, _ = case()
    patch, crop = (20, 18, 10), (10, 10, 4)
    keys = ["image", "label"]
    chain = Compose(
        [
            RandFieldOfViewd(keys, 6, 12, BORDER, min_spatial_size=patch, prob=1.0),
            RandElasticGridd(
                keys, prob=0.0, spatial_size=patch, mode=["bilinear", "nearest"], crop_keys=["label"],
                crop_size=crop, label_key="label", pos_fraction=0.5,
            ),
        ]
    )  # fmt: skip
    chain.set_random_state(0)
    out = chain(dict(d))
    assert tuple(out["image"].shape) == (1, *patch) and tuple(out["label"].shape) == (1, *crop)
    batch = next(iter(DataLoader(Dataset([dict(d)] * 4, chain), batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 1, *patch)


def test_ignore_value_is_kept_in_the_new_locations() -> None:
    d, _, _ = case()
    label = d["label"].clone()
    label[label == 0] = 255
    d = ForegroundLocationsd("label", ignore_index=255)({"image": d["image"], "label": label})
    cut = RandFieldOfViewd(["image", "label"], 8, 8, BORDER, prob=1.0, pos_fraction=1.0, ignore_index=255)
    cut.set_random_state(3)
    out = cut(d)
    assert out["label_locations"].ignore_index == 255
    assert 255 not in out["label_locations"].classes


def test_errors_name_what_is_wrong() -> None:
    d, _, _ = case()
    with pytest.raises(ValueError, match="min_size <= max_size"):
        RandFieldOfViewd(["image", "label"], 10, 6, BORDER, prob=1.0)(d)
    with pytest.raises(ValueError, match="one per spatial axis"):
        RandFieldOfViewd(["image", "label"], [6, 6], 8, BORDER, prob=1.0)(d)
    with pytest.raises(ValueError, match="no voxel inside a border"):
        RandFieldOfViewd(["image", "label"], 6, 8, (20, 20, 20), prob=1.0)(d)
    with pytest.raises(ValueError, match="pos_fraction"):
        RandFieldOfViewd(["image", "label"], 6, 8, BORDER, pos_fraction=2.0)
    bad = dict(d, label=d["label"][:, :-1])
    with pytest.raises(ValueError, match="'label' has"):
        RandFieldOfViewd(["image", "label"], 6, 8, BORDER, prob=1.0)(bad)


def test_small_fov_overlay_converts_mm_to_voxels_and_train_json_has_none(tmp_path: Path, synthetic_em_3d: Path) -> None:
    """``small_fov.json`` on ``train.json`` + ``ct.json`` (1.5 x 1.5 x 3 mm) puts the cut after the cached
    locations and before the patch sampler, its sizes 100-250 mm in voxels; ``train.json`` alone has no cut."""

    def transforms(*names: str) -> list:
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / n) for n in names])
        parser.update({"bundle_root": str(tmp_path), "label_values": [0, 1]})
        if "ct.json" in names:  # 3D: the session's synthetic set is the datalist, not a new one in tmp_path
            parser["dataset_dir"] = str(synthetic_em_3d)
        return list(parser.get_parsed_content("train::preprocessing").transforms)

    assert not any(isinstance(t, RandFieldOfViewd) for t in transforms("train.json"))
    chain = transforms("train.json", "ct.json", "small_fov.json")
    kinds = [type(t) for t in chain]
    at = kinds.index(RandFieldOfViewd)
    assert kinds[at - 2 : at + 2] == [ForegroundLocationsd, kinds[at - 1], RandFieldOfViewd, RandElasticGridd]
    cut = chain[at]
    assert cut.min_size == [67, 67, 33] and cut.max_size == [167, 167, 83]
    assert list(cut.pad.spatial_border) == list(chain[kinds.index(MirrorPadd)].spatial_border)
