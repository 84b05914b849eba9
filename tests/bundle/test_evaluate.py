"""evaluate.json and the training run's report files, through MONAI's CLI (real subprocesses)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from test_unet_bundle import REPO, TINY, TINY_INFER, run_bundle

from unet_monai.io import load_manifest

EVALUATE = ["bundles/unet/inference.json", "bundles/unet/evaluate.json"]  # evaluation is an overlay on inference
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.integration
def test_training_writes_report_and_evaluate_writes_per_case_scores(tmp_path: Path, tiny_2d_bundle: Path) -> None:
    """The session's tiny training run (two epochs) left its report; evaluate.json, with test-time flips and
    rotations, scores every validation case of its data set."""
    rows = list(csv.DictReader(open(tiny_2d_bundle / "eval" / "training_metrics.csv", newline="")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["val_mean_dice"] for r in rows)
    for png in ("training_curves.png", "validation_overlays.png"):
        with Image.open(tiny_2d_bundle / "eval" / png) as image:
            assert image.format == "PNG"
    assert list((tiny_2d_bundle / "eval" / "tensorboard").glob("events.out.tfevents.*"))

    dataset = tiny_2d_bundle / "data" / "synthetic_em_2d"
    checkpoint = tiny_2d_bundle / "models" / "model.pt"
    out = tmp_path / "evaluation"
    proc = run_bundle(
        "evaluating", EVALUATE, tmp_path, *TINY_INFER, "--dataset_dir", str(dataset),
        "--ckpt_path", str(checkpoint), "--output_dir", str(out), "--test_time_flips", "True",
    )  # fmt: skip
    cases = load_manifest(dataset / "datalist.json", "validation")
    rows = list(csv.DictReader(open(out / "evaluation_per_case.csv", newline="")))
    assert [r["case"] for r in rows] == [c["case_id"] for c in cases]
    for row in rows:
        assert 0.0 <= float(row["dice_membrane"]) <= 1.0 and 0.0 <= float(row["pixel_error"]) <= 1.0
        assert 0.0 <= float(row["rand_error"]) <= 1.0 and 0.0 <= float(row["v_info"]) <= 1.0
    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["cases"] == len(cases)
    mean = sum(float(r["pixel_error"]) for r in rows) / len(rows)
    assert summary["metrics"]["pixel_error"]["mean"] == pytest.approx(mean)
    assert "cases: " in proc.stderr + proc.stdout
    assert not list(tmp_path.glob("data"))  # the data set named by --dataset_dir was used, not generated anew


def test_test_time_flips_wrap_the_evaluation_inferer(tmp_path: Path) -> None:
    """``--test_time_flips True`` puts the flip ensemble around the overlap-tile inferer (its averaging is tested
    in tests/inferers/test_flip_ensemble.py); without it the inferer is the plain one."""
    from monai.bundle import ConfigParser

    from unet_monai.inferers import FlipEnsembleInferer

    kinds = {}
    for flips in (False, True):
        parser = ConfigParser()
        parser.read_config([str(REPO / f) for f in EVALUATE])
        parser.update({"bundle_root": str(tmp_path), "test_time_flips": flips, "features": [4, 8, 16]})
        kinds[flips] = parser.get_parsed_content("inferer")
    assert isinstance(kinds[True], FlipEnsembleInferer) and not isinstance(kinds[False], FlipEnsembleInferer)
    assert list(kinds[True].flip_axes) == [0, 1]  # the axes train.json's RandFlipd mirror, as nnU-Net mirrors


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED / "isbi2012").is_dir(), reason=f"shared ISBI 2012 data not found at {SHARED}")
def test_isbi_overlay_trains_on_the_png_sections_with_mapped_labels(tmp_path: Path) -> None:
    """The ISBI 2012 overlay: PNG sections from the shared data root, labels 255 -> 0 (cell), 0 -> 1 (membrane)."""
    configs = ["bundles/unet/train.json", "bundles/unet/isbi2012.json"]
    overrides = [*TINY, "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")]
    one = ["--epochs", "1", "--iterations_per_epoch", "1", "--val_interval", "1", "--batch_size", "1"]
    run_bundle("training", configs, tmp_path, *overrides, *one, "--data_root", str(SHARED / "isbi2012"))
    assert (tmp_path / "models" / "model.pt").is_file()
    out = tmp_path / "evaluation"
    evaluate = [*EVALUATE, "bundles/unet/isbi2012.json"]
    checkpoint = ["--ckpt_dir", str(tmp_path / "models")]
    run_bundle("evaluating", evaluate, tmp_path, *TINY_INFER, *checkpoint, "--output_dir", str(out))
    rows = list(csv.DictReader(open(out / "evaluation_per_case.csv", newline="")))
    assert [r["case"] for r in rows] == [f"isbi2012_{i}" for i in range(20, 25)]
