"""The bundle through MONAI's own CLI (real subprocesses) and ConfigWorkflow, on the embedded synthetic data."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from unet_monai.networks import PaperUNet

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unet"
TINY_INFER = ["--features", "[4,8,16]", "--val_output_patch_size", "[128,128]"]  # inference.json's ids
TINY = [*TINY_INFER, "--output_patch_size", "[36,36]"]


def bundle_command(entry: str, config_files: list[str], bundle_root: Path, *overrides: str) -> list[str]:
    """``python -m monai.bundle run <entry> --config_file ... --bundle_root ... <overrides>``, as the README has it."""
    config = config_files[0] if len(config_files) == 1 else "[" + ",".join(f"'{c}'" for c in config_files) + "]"
    run = [sys.executable, "-m", "monai.bundle", "run", entry, "--config_file", config]
    return [*run, "--bundle_root", str(bundle_root), *overrides]


def run_bundle(
    entry: str, config_files: list[str], bundle_root: Path, *overrides: str, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run the bundle from ``cwd`` (the repository root by default; elsewhere the config files are named by their
    absolute paths) and require success."""
    if cwd != REPO:
        config_files = [str(REPO / c) for c in config_files]
    cmd = bundle_command(entry, config_files, bundle_root, *overrides)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def refused_bundle_run(entry: str, config_files: list[str], bundle_root: Path, *overrides: str) -> str:
    """Run the bundle from the repository root, require it to fail, and return its output (stdout, then stderr)."""
    cmd = bundle_command(entry, config_files, bundle_root, *overrides)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, f"{' '.join(cmd)} should have failed:\n{proc.stdout[-3000:]}"
    return proc.stdout + proc.stderr


def train_tiny(bundle_root: Path) -> subprocess.CompletedProcess:
    """Two epochs of one iteration of the 2D bundle with a tiny network, validating after each: a checkpoint to run
    inference or export with, and the training report of two epochs. It runs from ``bundle_root``, a folder outside
    the repository, as a user's own project folder would be."""
    epochs = ["--epochs", "2", "--iterations_per_epoch", "1", "--val_interval", "1"]
    return run_bundle("training", ["bundles/unet/train.json"], bundle_root, *TINY, *epochs, cwd=bundle_root)


def read_metrics(output_dir: Path) -> dict[str, float]:
    """The metrics of the last epoch with a validation, from the training report's ``training_metrics.csv``."""
    with open(output_dir / "training_metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_mean_dice")]
    return {k: float(v) for k, v in rows[-1].items() if v}


@pytest.mark.integration
def test_training_then_inference_cli(tmp_path: Path, tiny_2d_bundle: Path) -> None:
    """The headline command with small overrides trains, validates, checkpoints (the session's ``tiny_2d_bundle``
    run); inference then writes labels."""
    log = (tiny_2d_bundle / "training.log").read_text()
    assert "val_mean_dice" in log
    dice = read_metrics(tiny_2d_bundle / "eval")["val_mean_dice"]
    assert 0.0 <= dice <= 1.0

    checkpoint = tiny_2d_bundle / "models" / "model.pt"
    state = torch.load(checkpoint, weights_only=True)  # a plain state dict, loadable without pickle code
    net = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16))
    net.load_state_dict(state)

    dataset = tiny_2d_bundle / "data" / "synthetic_em_2d"
    out = tmp_path / "eval"
    run_bundle(
        "inference", ["bundles/unet/inference.json"], tmp_path, *TINY_INFER, "--dataset_dir", str(dataset),
        "--ckpt_path", str(checkpoint), "--output_dir", str(out),
    )  # fmt: skip
    outputs = sorted(out.glob("*_seg.nii.gz"))
    cases = sorted((dataset / "imagesTs").glob("*.nii.gz"))
    assert [o.name.replace("_seg", "") for o in outputs] == [c.name for c in cases]
    for output, case in zip(outputs, cases):
        seg, image = nib.load(output), nib.load(case)
        assert seg.shape == image.shape
        np.testing.assert_allclose(seg.affine, image.affine)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


@pytest.mark.integration
def test_training_3d_overlay(tmp_path: Path, synthetic_em_3d: Path) -> None:
    """The 3D setting is one overlay file away and runs end to end."""
    run_bundle(
        "training",
        ["bundles/unet/train.json", "bundles/unet/train_3d.json"],
        tmp_path,
        "--dataset_dir",
        str(synthetic_em_3d),
        "--train::dataset::cache_rate",
        "0.1",  # cache (and weight-map) 2 of the 24 volumes up front; one iteration draws 2
        "--features",
        "[2,4]",
        "--output_patch_size",
        "[8,8,8]",
        "--val_output_patch_size",
        "[48,48,48]",
        "--epochs",
        "1",
        "--iterations_per_epoch",
        "1",
        "--val_interval",
        "1",
    )
    assert (tmp_path / "models" / "model.pt").is_file()
    assert 0.0 <= read_metrics(tmp_path / "eval")["val_mean_dice"] <= 1.0


def test_train_config_has_bundle_properties(tmp_path: Path) -> None:
    """MONAI's required train properties (bundle/properties.py) are all defined."""
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        features=[4, 8, 16],
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    net = workflow.network_def
    patch = workflow.parser.get_parsed_content("patch_size")
    out = net.output_shape(patch)  # the label crop size: the network output for one training patch
    assert all(o >= 100 for o in out)
    assert [p - o for p, o in zip(patch, out)] == [2 * net.context] * 2


@pytest.mark.slow
@pytest.mark.integration
def test_headline_default_reaches_dice(tmp_path: Path) -> None:
    """The default training run (no overrides) reaches validation Dice >= 0.8 on the synthetic set."""
    run_bundle("training", ["bundles/unet/train.json"], tmp_path)
    assert read_metrics(tmp_path / "eval")["val_mean_dice"] >= 0.8


SHARED_CT = REPO.parent / "shared" / "data" / "dcmqi-ct-seg" / "ct-3slice"


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_CT.is_dir(), reason=f"shared DICOM series not found at {SHARED_CT}")
def test_inference_on_a_dicom_folder_writes_nifti_and_seg(
    tmp_path: Path, synthetic_em_3d: Path, dciodvfy: Callable[[Path], list[str]]
) -> None:
    """A 3D model segments a real DICOM series: NIfTI with the series' affine, and a DICOM SEG that references it."""
    pytest.importorskip("highdicom")
    import highdicom as hd
    import pydicom
    from monai.bundle import ConfigParser
    from monai.transforms import LoadImage

    from unet_monai.io import DicomSeriesReader

    configs = ["bundles/unet/inference.json", "bundles/unet/train_3d.json"]
    small = ["--features", "[2,4]", "--val_output_patch_size", "[48,48,48]", "--dataset_dir", str(synthetic_em_3d)]
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in configs])
    parser["features"] = [2, 4]
    state = parser.get_parsed_content("network_def").state_dict()
    state["head.bias"] = torch.tensor([0.0, 50.0])  # membrane everywhere: the SEG has a segment to write
    (tmp_path / "models").mkdir()
    torch.save(state, tmp_path / "models" / "model.pt")
    run_bundle(
        "inference", configs, tmp_path, *small, "--input", str(SHARED_CT), "--dicom_seg", "True",
        "--output_dir", str(tmp_path / "out"),
    )  # fmt: skip
    series = LoadImage(image_only=True)(str(SHARED_CT), reader=DicomSeriesReader())
    nifti = nib.load(tmp_path / "out" / "ct-3slice_seg.nii.gz")
    assert nifti.shape == tuple(series.shape)
    np.testing.assert_allclose(nifti.affine, np.asarray(series.affine), atol=1e-4)
    assert np.asarray(nifti.dataobj).all()
    dciodvfy(tmp_path / "out" / "ct-3slice_seg.dcm")  # 0 errors, warnings listed
    seg = hd.seg.segread(tmp_path / "out" / "ct-3slice_seg.dcm")
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in SHARED_CT.iterdir()}
    referenced = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert referenced == sources  # every slice has membrane, so every slice is referenced
    assert seg.SegmentSequence[0].SegmentLabel == "membrane"


@pytest.mark.integration
def test_torchrun_inference_writes_every_case_once(
    tmp_path: Path, tiny_2d_bundle: Path, with_tiny_checkpoint: Callable[[], Path]
) -> None:
    """Two processes share a datalist: each case is segmented by exactly one rank."""
    with_tiny_checkpoint()
    images = sorted((tiny_2d_bundle / "data" / "synthetic_em_2d" / "imagesTr").glob("*.nii.gz"))[:5]
    config = "['bundles/unet/inference.json','bundles/unet/multi_gpu_inference.json']"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port, not the default 29500 that another run may hold
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        config,
        "--bundle_root",
        str(tmp_path),
        *TINY_INFER,
        "--input",
        "[" + ",".join(f"'{p}'" for p in images) + "]",
        "--output_dir",
        str(tmp_path / "out"),
        "--save_labels::print_log",
        "True",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "out").glob("*_seg.nii.gz"))
    assert written == sorted(p.name.replace(".nii.gz", "_seg.nii.gz") for p in images)
    log = proc.stdout + proc.stderr
    assert sum(log.count(f"{p.name.replace('.nii.gz', '')}_seg.nii.gz") for p in images) == len(images)


@pytest.mark.integration
def test_inference_with_watershed_lines_only_adds_membrane(
    tmp_path: Path, tiny_2d_bundle: Path, with_tiny_checkpoint: Callable[[], Path]
) -> None:
    """``--watershed True``: the labels are the plain run's plus watershed lines (membrane added, none removed),
    on the same grid. The barely trained net's head is shifted so that half the image is cell, and the seed
    threshold is the 30th percentile of its membrane probability: there are seeds and lines to draw."""
    from unet_monai.inferers import OverlapTileInferer

    checkpoint = with_tiny_checkpoint()
    image_file = sorted((tiny_2d_bundle / "data" / "synthetic_em_2d" / "imagesTs").glob("*.nii.gz"))[0]
    net = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16)).eval()
    state = torch.load(checkpoint, weights_only=True)
    net.load_state_dict(state)
    image = torch.as_tensor(np.asarray(nib.load(image_file).dataobj), dtype=torch.float32)
    with torch.no_grad():
        logits = OverlapTileInferer(roi_size=128)(((image - image.mean()) / image.std())[None, None], net)
    margin = logits[0, 1] - logits[0, 0]  # the membrane logit over the cell logit
    state["head.bias"][1] -= margin.median()
    torch.save(state, checkpoint)
    seed_threshold = float(torch.sigmoid(margin - margin.median()).quantile(0.3))

    common = [*TINY_INFER, "--input", str(image_file)]
    run_bundle("inference", ["bundles/unet/inference.json"], tmp_path, *common, "--output_dir", str(tmp_path / "a"))
    run_bundle(
        "inference", ["bundles/unet/inference.json"], tmp_path, *common, "--output_dir", str(tmp_path / "b"),
        "--watershed", "True", "--watershed_seed_threshold", str(seed_threshold), "--watershed_min_seed_size", "1",
    )  # fmt: skip
    name = image_file.name.replace(".nii.gz", "_seg.nii.gz")
    plain, lined = nib.load(tmp_path / "a" / name), nib.load(tmp_path / "b" / name)
    np.testing.assert_allclose(lined.affine, plain.affine)
    plain_labels, lined_labels = np.asarray(plain.dataobj), np.asarray(lined.dataobj)
    assert lined_labels.shape == plain_labels.shape and set(np.unique(lined_labels)) <= {0, 1}
    assert (lined_labels >= plain_labels).all() and (lined_labels > plain_labels).any()


def run_monai_bundle(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.integration
def test_verify_net_in_out_and_torchscript_export(tmp_path: Path, with_tiny_checkpoint: Callable[[], Path]) -> None:
    """MONAI's own bundle checks: the network matches metadata.json, and ckpt_export's TorchScript model gives
    the eager model's output."""
    meta = ["--meta_file", "bundles/unet/metadata.json", "--config_file", "bundles/unet/train.json"]
    proc = run_monai_bundle("verify_net_in_out", "network_def", *meta, "--bundle_root", str(tmp_path), "--n", "4")
    assert "verified with no error" in proc.stdout + proc.stderr

    checkpoint = with_tiny_checkpoint()
    exported = tmp_path / "model.ts"
    run_monai_bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(exported),
        "--ckpt_file",
        str(checkpoint),
        *meta,
        "--bundle_root",
        str(tmp_path),
        "--features",
        "[4,8,16]",
    )
    scripted = torch.jit.load(str(exported))
    eager = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16))
    eager.load_state_dict(torch.load(checkpoint, weights_only=True))
    eager.eval()
    x = torch.randn(1, 1, *eager.input_shape_for((40, 40)))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), atol=1e-5, rtol=1e-5)


def test_override_parsing_and_check(tmp_path: Path) -> None:
    """Only the monai.bundle command line is checked; unknown ids are refused with a suggestion."""
    from unet_monai.overrides import check_overrides, override_keys

    files, keys = override_keys(
        ["run", "training", "--config_file", "['a.json','b.json']", "--epochs=3", "--train::trainer::max_epochs", "2"]
    )
    assert files == ["a.json", "b.json"] and keys == ["epochs", "train::trainer::max_epochs"]
    cli = "/site-packages/monai/bundle/__main__.py"
    train = str(BUNDLE / "train.json")
    check_overrides(
        [cli, "run", "training", "--config_file", train, "--epochs", "1", "--train::trainer::max_epochs", "1"]
    )
    with pytest.raises(ValueError, match=r"--epoch names no config id .*did you mean --epochs"):
        check_overrides([cli, "run", "training", "--config_file", train, "--epoch", "1"])
    check_overrides(["pytest", "--epoch", "1"])  # not the bundle command line: nothing to check


@pytest.mark.integration
def test_cli_refuses_a_misspelt_override(tmp_path: Path) -> None:
    output = refused_bundle_run("training", ["bundles/unet/train.json"], tmp_path, "--epoch", "1")
    assert "--epoch names no config id" in output
    assert not (tmp_path / "models").exists()  # refused before any training
