"""The bundle's configs as files: one definition of each shared thing, no working-directory paths, no switches a
default run needs, and runs from a user's own folder outside the repository (real CLI processes)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser, ConfigWorkflow
from test_unet_bundle import BUNDLE, TINY_INFER, run_bundle

CONFIGS = sorted(p for p in BUNDLE.glob("*.json") if p.name not in ("metadata.json", "metadata_schema.json"))
# what inference.json must repeat from train.json (MONAI configs have no include, and the README's inference
# command, MONAI Label and the model zoo load inference.json alone): the network and the stages it runs through.
# Not the datalist: inference reads the one training wrote (it never generates data), with no label checks.
SHARED_IDS = [
    "bundle_root", "output_dir", "ckpt_dir", "device", "spatial_dims", "dataset_dir", "data_root",
    "in_channels", "num_classes", "features", "padding", "norm", "dropout", "network_def", "network", "precision",
    "memory_format", "val_output_patch_size", "tile_inferer", "stages::check", "stages::labels",
    "stages::orientation", "stages::spacing", "stages::intensity",
]  # fmt: skip


def raw(path: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(path))
    return parser


def test_inference_repeats_train_definitions_verbatim() -> None:
    """Every definition inference.json shares with train.json is the same text, so the two cannot drift apart."""
    train, infer = raw(BUNDLE / "train.json"), raw(BUNDLE / "inference.json")
    for key in SHARED_IDS:
        assert infer[key] == train[key], f"inference.json's {key} differs from train.json's"


def test_no_config_reads_another_file_through_the_working_directory() -> None:
    """No ``%path::id`` macro: MONAI resolves its path against the working directory, so a bundle using one runs
    only from the repository root. Macros within the same file (``%id``) are fine."""
    for path in CONFIGS:
        for macro in re.findall(r'"%([^"]*)"', path.read_text()):
            assert "::" not in macro or not macro.split("::")[0].endswith((".json", ".yaml")), f"{path.name}: %{macro}"


def test_inference_needs_no_switch_and_configs_stay_short() -> None:
    """A default inference has no ``_disabled_`` switch to understand; every config is shorter than the 367-line
    train.json it replaced."""
    assert "_disabled_" not in (BUNDLE / "inference.json").read_text()
    for path in CONFIGS:
        assert len(path.read_text().splitlines()) < 367, path.name


def test_overlays_only_set_ids_their_base_has() -> None:
    """An overlay that names an id its base config lacks would silently add it (MONAI merges unknown keys): every id
    evaluate.json and memory_mapped.json set exists in inference.json, every id train_3d.json sets in train.json (a
    nested id may add an argument to a component that exists)."""
    for overlay, base, added in (
        ("evaluate.json", "inference.json", {"class_names", "hd95", "evaluating"}),
        ("isbi2012.json", "train.json", {"watershed", "class_names"}),
        ("memory_mapped.json", "inference.json", set()),
        ("train_3d.json", "train.json", set()),
        ("sgd.json", "train.json", {"momentum"}),
        ("small_fov.json", "train.json", {"fov_size_mm"}),
        ("nnunet_augment.json", "train.json", set()),
    ):
        parser = raw(BUNDLE / base)
        for key in ConfigParser.load_config_file(BUNDLE / overlay):
            target = key if key in added or "::" not in key or key in parser else key.rsplit("::", 1)[0]
            assert target in parser or key in added, f"{overlay} sets {key}, which {base} does not have"


def test_memory_mapped_overlay_refuses_flags_it_cannot_honour(tmp_path: Path) -> None:
    """memory_mapped.json writes labels tile by tile on the input's grid; --watershed True and --test_time_flips True
    need the whole float map, a spacing stage the whole volume: the refusal names the overlay and the flags or stage."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "inference.json"), str(BUNDLE / "memory_mapped.json")])
    parser.update({"bundle_root": str(tmp_path), "watershed": True, "test_time_flips": True})
    with pytest.raises(RuntimeError) as info:
        parser.get_parsed_content("postprocessing")
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert "memory_mapped.json" in str(cause) and "--test_time_flips True --watershed True" in str(cause)
    parser.update(
        {"watershed": False, "test_time_flips": False, "stages::spacing": [{"_target_": "Identityd", "keys": "image"}]}
    )
    with pytest.raises(RuntimeError) as info:
        parser.get_parsed_content("postprocessing", lazy=False)
    assert "the stages::spacing stage" in str(info.value.__cause__)


@pytest.mark.integration
def test_evaluation_and_inference_from_a_user_folder(tmp_path: Path, tiny_2d_bundle: Path) -> None:
    """From a folder outside the repository (the session's tiny training ran from one too: ``train_tiny``),
    evaluation and inference write where ``--bundle_root`` / ``--output_dir`` say, and nothing into the repository."""
    user = tmp_path / "my_project"
    user.mkdir()
    before = set((BUNDLE).rglob("*"))
    dataset = tiny_2d_bundle / "data" / "synthetic_em_2d"
    checkpoint = str(tiny_2d_bundle / "models" / "model.pt")
    common = [*TINY_INFER, "--dataset_dir", str(dataset), "--ckpt_path", checkpoint]
    evaluate = ["bundles/unet/inference.json", "bundles/unet/evaluate.json"]
    run_bundle("evaluating", evaluate, user, *common, cwd=user)
    assert (user / "eval" / "evaluation_per_case.csv").is_file()
    image = sorted((dataset / "imagesTs").glob("*.nii.gz"))[0]
    run_bundle("inference", ["bundles/unet/inference.json"], user, *common, "--input", str(image), cwd=user)
    label = nib.load(user / "eval" / image.name.replace(".nii.gz", "_seg.nii.gz"))
    source = nib.load(image)
    assert label.shape == source.shape and np.allclose(label.affine, source.affine)
    assert set((BUNDLE).rglob("*")) == before  # nothing written into the repository's bundle


def test_config_workflow_from_a_user_folder(tmp_path: Path, tiny_2d_bundle: Path, monkeypatch) -> None:
    """MONAI's ConfigWorkflow (what ``monai.bundle.load`` and MONAI Label build on) from a user's folder: the
    inference workflow has every required property and runs; the training workflow has its properties."""
    monkeypatch.chdir(tmp_path)
    image = sorted((tiny_2d_bundle / "data" / "synthetic_em_2d" / "imagesTs").glob("*.nii.gz"))[0]
    infer = ConfigWorkflow(
        config_file=str(BUNDLE / "inference.json"), workflow_type="inference", bundle_root=str(tmp_path),
        features=[4, 8, 16], val_output_patch_size=[128, 128], input=str(image),
        ckpt_path=str(tiny_2d_bundle / "models" / "model.pt"), logging_file=False,
    )  # fmt: skip
    infer.initialize()
    assert infer.check_properties() in (None, [])
    infer.run()
    infer.finalize()
    assert (tmp_path / "eval" / image.name.replace(".nii.gz", "_seg.nii.gz")).is_file()
    train = ConfigWorkflow(
        config_file=str(BUNDLE / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path / "train"),
        logging_file=False,
    )
    train.initialize()
    assert train.check_properties() in (None, [])


@pytest.mark.parametrize(
    "configs, key",
    [
        (["inference.json"], "label_steps"),
        (["inference.json", "evaluate.json"], "label_steps"),
        (["train.json", "semi_automatic.json"], "segment::label_steps"),
    ],
    ids=["inference", "evaluation", "semi_automatic"],
)
def test_keep_largest_component_removes_islands_per_class(tmp_path: Path, configs: list[str], key: str) -> None:
    """``--keep_largest_component True`` adds MONAI's KeepLargestConnectedComponentd to the label steps (after the
    argmax), per class; without it the labels keep every island. The semi-automated command takes the same switch."""
    import torch
    from monai.data import MetaTensor

    logits = torch.zeros(3, 12, 12)
    logits[1, 1:5, 1:5] = 5  # class 1: a 16-voxel blob ...
    logits[1, 9, 9] = 5  # ... and a 1-voxel island
    logits[2, 8:11, 1:4] = 5  # class 2: one blob
    labels = {}
    for keep in (False, True):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / f) for f in configs])
        parser.update(
            {"bundle_root": str(tmp_path), "num_classes": 3, "keep_largest_component": keep, "label_values": None}
        )
        steps = parser.get_parsed_content(key)[:-1]  # without the inverse of the (empty) preprocessing
        names = [type(s).__name__ for s in steps]
        assert ("KeepLargestConnectedComponentd" in names) == keep
        data = {"pred": MetaTensor(logits.clone())}
        for step in steps:
            data = step(data)
        labels[keep] = torch.as_tensor(data["pred"])
    if labels[False].shape[0] > 1:
        labels[False] = labels[False].argmax(0, keepdim=True)  # evaluation without it scores the logits themselves
    assert labels[False][0, 9, 9] == 1 and labels[True].view(-1)[9 * 12 + 9] == 0
    assert (labels[True] == 1).sum() == 16 and (labels[True] == 2).sum() == 9


def test_inference_generates_no_data_and_needs_no_datalist(tmp_path: Path) -> None:
    """Inference of given files on a fresh bundle root (a MONAI Label server's, a read-only zoo bundle) neither
    writes the synthetic data set nor needs a datalist: label checks and names come from evaluation's overlay."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "inference.json"))
    parser.update({"bundle_root": str(tmp_path), "input": str(tmp_path / "x.nii.gz"), "features": [4, 8, 16]})
    for key in ("preprocessing", "postprocessing", "inferer", "network"):
        parser.get_parsed_content(key)
    assert parser.get_parsed_content("label_names") == {1: "class 1"}
    assert not list(tmp_path.iterdir())  # nothing written below the bundle root
