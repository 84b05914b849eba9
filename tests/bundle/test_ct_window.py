"""``ct_window.json``: a fixed soft-tissue HU window for train and inference alike, and intensity augmentation in
training only; ``augment_intensity`` is empty in ``train.json`` (the headline run is unchanged)."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, RandScaleIntensityd, RandShiftIntensityd

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "unet"


def parse(*names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / name) for name in names])
    return parser


def test_the_window_maps_the_same_hu_in_train_and_inference() -> None:
    hu = MetaTensor(torch.tensor([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]]))  # (1, 1, 5)
    outs = []
    for config in ("train.json", "inference.json"):
        stage = Compose(parse(config, "ct_window.json").get_parsed_content("stages::intensity"))
        outs.append(stage({"image": hu.clone()})["image"].as_tensor())
    assert torch.allclose(outs[0], torch.tensor([[[-2.0, -2.0, 0.0, 2.0, 2.0]]])) and torch.equal(*outs)


def test_intensity_augmentation_runs_in_training_only_with_the_overlay() -> None:
    assert parse("train.json")["augment_intensity"] == []
    transforms = parse("train.json", "ct_window.json").get_parsed_content("train::preprocessing").transforms
    augment = [t for t in transforms if isinstance(t, (RandScaleIntensityd, RandShiftIntensityd))]
    assert [type(t) for t in augment] == [RandScaleIntensityd, RandShiftIntensityd]
    assert list(transforms[-2:]) == augment  # after the patch is drawn, on the image only
    assert all(list(t.keys) == ["image"] for t in augment)
