"""``nnunet_augment.json``: nnU-Net's default augmentation on train.json (rotation and scaling in the elastic
patch sampler, noise, blur, brightness, contrast, low resolution, gamma), in 2D and 3D; ``train.json`` alone
keeps both ranges at 0 and ``augment_intensity`` empty (the headline run is unchanged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandGaussianNoised, RandSimulateLowResolutiond

from unet_monai.transforms import RandElasticGridd

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "unet"


def parse(tmp_path: Path, *names: str, dataset_dir: Path | None = None) -> ConfigParser:
    """The configs ``names`` with their outputs in ``tmp_path``; ``dataset_dir``: an existing synthetic set to read
    (the session's 3D one) instead of generating the default one there."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / name) for name in names])
    parser.update({"bundle_root": str(tmp_path), **({"dataset_dir": str(dataset_dir)} if dataset_dir else {})})
    return parser


def elastic(parser: ConfigParser) -> RandElasticGridd:
    transforms = parser.get_parsed_content("train::preprocessing").transforms
    return next(t for t in transforms if isinstance(t, RandElasticGridd))


def test_train_json_alone_neither_rotates_nor_scales(tmp_path: Path) -> None:
    parser = parse(tmp_path, "train.json")
    sampler = elastic(parser).elastic
    assert not sampler.rotate_range.any() and not sampler.scale_range.any()
    assert parser["augment_intensity"] == []


@pytest.mark.parametrize("overlays", [(), ("train_3d.json",)], ids=["2d", "3d"])
def test_overlay_augments_training_patches_of_the_right_shape(
    tmp_path: Path, overlays: tuple[str, ...], request: pytest.FixtureRequest
) -> None:
    """Rotation (30 degrees) and scaling (0.8-1.2) reach the sampler; the intensity transforms come last, on the
    image only; real cases of the embedded data set come out as ``(1, *patch_size)`` images and
    ``(2, *output)`` labels (label and weight map), with finite values."""
    dataset_dir = request.getfixturevalue("synthetic_em_3d") if overlays else None
    parser = parse(tmp_path, "train.json", *overlays, "nnunet_augment.json", dataset_dir=dataset_dir)
    sampler = elastic(parser).elastic
    np.testing.assert_allclose(sampler.rotate_range, [0.5236])
    np.testing.assert_allclose(sampler.scale_range, [0.2])
    transforms = parser.get_parsed_content("train::preprocessing").transforms
    kinds = [type(t) for t in transforms]
    assert RandGaussianNoised in kinds and RandSimulateLowResolutiond in kinds
    assert all(list(t.keys) == ["image"] for t in transforms[kinds.index(RandGaussianNoised) :])
    parser["train::dataset::data"] = parser["train::dataset::data"] + "[:2]"  # cache the two cases read below
    dataset = parser.get_parsed_content("train::dataset")
    assert len(dataset) == 2
    patch = list(parser.get_parsed_content("patch_size"))
    output = list(parser.get_parsed_content("network_def").output_shape(patch))
    for index in range(2):
        item = dataset[index]
        assert list(item["image"].shape) == [1, *patch] and list(item["label"].shape) == [2, *output]
        assert torch.isfinite(item["image"]).all() and set(item["label"][0].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("pool_sizes", "expected"),
    [(None, [0.5236]), ([[2, 2, 2], [2, 2, 2]], [0.5236]), ([[2, 2, 1], [2, 2, 2]], [0.0, 0.0, 0.5236])],
    ids=["default", "isotropic_plan", "coarse_third_axis"],
)
def test_a_plan_that_skips_pooling_along_an_axis_rotates_about_it_only(
    tmp_path: Path, pool_sizes: list | None, expected: list[float], synthetic_em_3d: Path
) -> None:
    """nnU-Net's in-plane rotation for anisotropic data: where the first pooling skips an axis (5 mm slices), the
    patch turns about that axis only, within the fine plane."""
    parser = parse(tmp_path, "train.json", "train_3d.json", "nnunet_augment.json", dataset_dir=synthetic_em_3d)
    parser.update({"pool_sizes": pool_sizes, "features": [8, 16, 32]} if pool_sizes else {})
    np.testing.assert_allclose(elastic(parser).elastic.rotate_range, expected)
