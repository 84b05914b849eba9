"""bundles/unet/plan.json through MONAI's CLI on phantom volumes, and its overlay laid over train.json and
inference.json; the shared real CT (when ``../shared`` is there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from phantoms import ANISO_CASES, write_datalist

from unet_monai.planning import fingerprint_datalist, plan, write_overlay
from unet_monai.planning.overlay import OVERLAY_IDS, PLANNED_SAMPLING

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unet"
SHARED = REPO.parent / "shared" / "data"


def run_planning(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "planning", "--config_file", str(BUNDLE / "plan.json"), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc


@pytest.fixture(scope="module")
def phantom_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``ANISO_CASES`` datalist, written once for this module."""
    return write_datalist(tmp_path_factory.mktemp("phantoms"), ANISO_CASES)


@pytest.fixture(scope="module")
def planned(phantom_datalist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The overlay the CLI writes for the phantom datalist (default output path under --bundle_root); one CLI
    run for the module."""
    root = tmp_path_factory.mktemp("bundle")
    proc = run_planning("--manifest", str(phantom_datalist), "--bundle_root", str(root))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "plan for" in proc.stdout and "pool sizes [[2, 2, 1], [2, 2, 1], [2, 2, 2]]" in proc.stdout
    return root / "plans" / "phantoms.json"


@pytest.mark.integration
def test_cli_writes_the_overlay_the_rules_give(planned: Path, phantom_datalist: Path) -> None:
    overlay = json.loads(planned.read_text())
    # by hand (phantoms.ANISO_CASES): median spacing (0.8, 0.8, 5) mm; 5 > 3 x 0.8 and 12 x 3 < 60 voxels, so
    # z takes the 10th percentile of (5, 4, 5) mm = 4.2; median shape after resampling (56, 56, 14); x, y pooled
    # alone (kernel 1 along z) until 3.2 mm is within 2x of 4.2 mm; z stops at 7 voxels (< 8)
    (spacing,) = overlay["stages::spacing"]
    assert spacing["_target_"] == "Spacingd" and spacing["pixdim"] == pytest.approx([0.8, 0.8, 4.2])
    assert overlay["stages::orientation"] == [{"_target_": "Orientationd", "keys": "@spatial_keys", "axcodes": "RAS"}]
    assert overlay["pool_sizes"] == [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    assert overlay["kernel_sizes"] == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]
    assert overlay["features"] == [32, 64, 128, 256]
    # outputs along x, y are 4 + 8n (3 poolings): 52 <= 56; along z even: 14; fits 8 GiB at batch 2
    assert overlay["output_patch_size"] == [52, 52, 14] == overlay["val_output_patch_size"]
    assert overlay["batch_size"] == 2
    assert overlay["in_channels"] == 1 and overlay["num_classes"] == 3 and overlay["norm"] == "batch"
    assert overlay["manifest"] == str(phantom_datalist.resolve())
    (intensity,) = overlay["stages::intensity"]
    (scheme,) = intensity["schemes"]
    stats = overlay["plan"]["fingerprint"]["foreground_intensity"][0]
    assert scheme == {"scheme": "ct", "clip": [stats["percentile_00_5"], stats["percentile_99_5"]],
                      "mean": stats["mean"], "std": stats["std"]}  # fmt: skip
    assert overlay["plan"]["estimated_memory_mb"] <= 8192
    assert overlay["plan"]["fingerprint"]["orientations"] == ["LPS", "PSR", "RAS"]
    # nnU-Net's foreground oversampling, and no EM border weight map
    assert (overlay["pos_fraction"], overlay["border_w0"], overlay["border_class_weights"]) == (0.33, 0.0, None)
    # the elastic displacement: 10 voxels along the finest axis, the same mm along the coarse one
    spacing = overlay["plan"]["target_spacing"]
    assert overlay["elastic_sigma"] == [round(10 * min(spacing) / s, 2) for s in spacing]
    assert overlay["elastic_sigma"][:2] == [10.0, 10.0] and overlay["elastic_sigma"][2] < 2.5


def test_every_id_the_overlay_sets_is_an_id_of_train_and_inference() -> None:
    training_only = {"output_patch_size", "batch_size", "elastic_sigma", *PLANNED_SAMPLING}  # not in inference
    for name, expected in (("train.json", set(OVERLAY_IDS)), ("inference.json", set(OVERLAY_IDS) - training_only)):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / name))
        missing = sorted(key for key in expected if key not in parser)
        assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_overlay_stages_resample_to_ras_at_the_target_spacing(planned: Path, config: str) -> None:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / config), str(planned)])
    net = parser.get_parsed_content("network_def")
    assert [list(p) for p in net.pool_sizes] == [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    stages = ["stages::load", "stages::orientation", "stages::spacing", "stages::intensity"]
    transform = Compose([t for stage in stages for t in parser.get_parsed_content(stage)])
    data = json.loads(Path(parser["manifest"]).read_text())["training"][0]  # stored LPS at 0.8 x 0.8 x 5 mm
    root = Path(parser["manifest"]).parent
    item = {key: str(root / data[key]) for key in parser["keys"]}
    out = transform(item)
    affine = out["image"].affine.numpy()
    assert nib.orientations.aff2axcodes(affine) == ("R", "A", "S")
    assert np.sqrt((affine[:3, :3] ** 2).sum(0)) == pytest.approx([0.8, 0.8, 4.2], abs=1e-5)
    assert out["image"].shape[1:] == (60, 56, 14)  # 12 slices x 5 mm / 4.2 mm, rounded
    if "label" in out:
        assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}  # nearest: no blended values


@pytest.mark.slow
@pytest.mark.integration
def test_cli_refuses_a_misspelt_override(phantom_datalist: Path, tmp_path: Path) -> None:
    proc = run_planning("--manifest", str(phantom_datalist), "--memory_budget", "100", "--bundle_root", str(tmp_path))
    assert proc.returncode != 0
    assert "memory_budget" in proc.stderr and not (tmp_path / "plans").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
def test_plan_of_the_shared_spleen_ct() -> None:
    fp = fingerprint_datalist(REPO / "data_manifests" / "msd_spleen_ct_crop.json", progress=False)
    assert fp["cases"][0]["shape"] == [164, 166, 26] and fp["cases"][0]["orientation"] == "RAS"
    p = plan(fp, memory_budget_mb=8192)
    assert p["target_spacing"] == pytest.approx([0.794922, 0.794922, 5.0])  # one case: its own spacing
    # x, y pooled alone twice (kernel 1 along the 5 mm axis), then all axes
    assert p["pool_sizes"][:3] == [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    assert p["kernel_sizes"][:3] == [[3, 3, 1], [3, 3, 1], [3, 3, 3]]
    assert all(o <= m for o, m in zip(p["output_patch_size"], [164, 166, 26]))
    assert p["schemes"][0]["scheme"] == "ct" and p["estimated_memory_mb"] <= 8192


@pytest.mark.slow
@pytest.mark.integration
def test_the_overlay_trains_and_segments_with_no_other_edit(tmp_path: Path) -> None:
    """Plan, one epoch of train.json + overlay, inference.json + overlay: labels on the LPS input's own grid.
    Only the channels are overridden (``--features``), to keep a CPU step short."""
    datalist = write_datalist(tmp_path / "data", ANISO_CASES)
    content = json.loads(datalist.read_text())
    content["validation"] = content["training"][:1]
    datalist.write_text(json.dumps(content))
    overlay = tmp_path / "plan.json"
    write_overlay(plan(fingerprint_datalist(datalist, progress=False)), overlay)
    for entry, config, extra in (
        ("training", "train.json", ["--epochs", "1", "--iterations_per_epoch", "1", "--val_interval", "1"]),
        ("inference", "inference.json", ["--split", "validation", "--tile_progress", "false"]),
    ):
        files = f"['{BUNDLE / config}','{overlay}']"
        cmd = [sys.executable, "-m", "monai.bundle", "run", entry, "--config_file", files,
               "--bundle_root", str(tmp_path), "--features", "[4, 8, 16, 32]", *extra]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    image = nib.load(tmp_path / "data" / "case0_0000.nii.gz")  # stored LPS at 0.8 x 0.8 x 5 mm
    seg = nib.load(tmp_path / "eval" / "case0_0000_seg.nii.gz")
    assert seg.shape == image.shape
    assert np.abs(seg.affine - image.affine).max() < 1e-4


def test_a_case_smaller_than_the_planned_patch_is_mirrored_up_to_it_in_training(tmp_path: Path) -> None:
    """The planner bounds the patch by the median shape; the smallest of three cases is thinner than it along z
    and narrower in-plane: training mirrors it up to the input patch and draws patches from it (nnU-Net pads)."""
    cases = [
        {"ras_shape": (60, 56, 14), "ras_spacing": (0.8, 0.8, 4.0), "axcodes": "RAS", "seed": 1},
        {"ras_shape": (64, 64, 14), "ras_spacing": (0.8, 0.8, 4.0), "axcodes": "LPS", "seed": 2},
        {"ras_shape": (30, 28, 4), "ras_spacing": (0.8, 0.8, 4.0), "axcodes": "PSR", "seed": 3},
    ]
    datalist = write_datalist(tmp_path / "data", cases)
    with pytest.warns(RuntimeWarning, match=r"1 case\(s\) \(case2\) are smaller than the output patch"):
        planned = plan(fingerprint_datalist(datalist, progress=False))
    overlay = write_overlay(planned, tmp_path / "plan.json")
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "train.json"), str(overlay)])
    features = [4 * 2**level for level in range(len(planned["features"]))]  # small, as many levels as planned
    parser.update({"bundle_root": str(tmp_path), "features": features, "batch_size": 1})
    dataset = parser.get_parsed_content("train::dataset")
    patch = parser.get_parsed_content("patch_size")
    output = parser.get_parsed_content("network_def").output_shape(patch)
    small = dataset[2]  # a list of crops (num_samples) or one dict
    for crop in small if isinstance(small, list) else [small]:  # RandRotate90d may swap the first two axes
        for key, shape in (("image", patch), ("label", output)):
            got = tuple(crop[key].shape[1:])
            assert got in (tuple(shape), (shape[1], shape[0], shape[2])), f"{key} {got}, expected {shape}"
