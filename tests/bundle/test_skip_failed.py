"""Skip-and-report in batch inference and evaluation (real CLI runs): bad cases are listed, the others finish."""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_unet_bundle import REPO, TINY_INFER, bundle_command

pytestmark = pytest.mark.integration


def write_cases(folder: Path) -> dict[str, Path]:
    """Two good 2D cases with labels, a truncated .nii.gz, a volume full of NaN, and a missing file."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("good_a", "good_b", "nan"):
        image = rng.normal(size=(200, 200)).astype(np.float32)
        if name == "nan":
            image[:] = np.nan
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), paths[name])
        nib.save(nib.Nifti1Image((image > 0).astype(np.uint8), np.eye(4)), folder / f"{name}_label.nii.gz")
    raw = paths["good_a"].read_bytes()
    paths["truncated"] = folder / "truncated.nii.gz"
    paths["truncated"].write_bytes(raw[: len(raw) // 3])  # a gzip stream cut short
    (folder / "truncated_label.nii.gz").write_bytes((folder / "good_a_label.nii.gz").read_bytes())
    paths["missing"] = folder / "missing.nii.gz"
    return paths


def write_datalist(folder: Path, paths: dict[str, Path]) -> Path:
    order = ["good_a", "truncated", "nan", "missing", "good_b"]
    entries = [{"image": paths[n].name, "label": f"{n}_label.nii.gz", "case_id": n} for n in order]
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"labels": {"0": "cell", "1": "membrane"}, "test": entries, "validation": entries}))
    return datalist


def run(entry: str, config: str | list[str], bundle_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = bundle_command(entry, [config] if isinstance(config, str) else config, bundle_root, *TINY_INFER, *overrides)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def failures(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def test_inference_skips_bad_cases_reports_them_and_exits_non_zero(
    tmp_path: Path, with_tiny_checkpoint: Callable[[], Path]
) -> None:
    with_tiny_checkpoint()
    paths = write_cases(tmp_path / "cases")
    datalist = write_datalist(tmp_path / "cases", paths)
    out = tmp_path / "out"
    proc = run(
        "inference", "bundles/unet/inference.json", tmp_path, "--input", str(datalist), "--output_dir", str(out),
        "--skip_failed", "True",
    )  # fmt: skip
    assert proc.returncode != 0  # the pipeline is told ...
    assert "3 case(s) failed and were skipped" in proc.stderr  # ... after every good case was written
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["good_a_seg.nii.gz", "good_b_seg.nii.gz"]
    report = failures(out / "failures.csv")
    assert sorted(report) == ["missing", "nan", "truncated"]
    assert "truncated.nii.gz" in report["truncated"]["error"]
    assert "missing.nii.gz" in report["missing"]["error"]
    assert all(row["stage"] == "loading" for row in report.values())

    fail_fast = run("inference", "bundles/unet/inference.json", tmp_path, "--input", str(datalist))
    assert fail_fast.returncode != 0 and "missing.nii.gz" in fail_fast.stderr  # default: stop at once


def test_evaluation_scores_the_good_cases_and_lists_the_failed_ones(
    tmp_path: Path, with_tiny_checkpoint: Callable[[], Path]
) -> None:
    """``--fail_at_end False``: the failures are only reported, the run exits 0 (the same ``SkipFailedCases``
    handler as in inference.json, so inference's exit code follows the same switch)."""
    with_tiny_checkpoint()
    paths = write_cases(tmp_path / "cases")
    datalist = write_datalist(tmp_path / "cases", paths)
    out = tmp_path / "eval_out"
    proc = run(
        "evaluating", ["bundles/unet/inference.json", "bundles/unet/evaluate.json"], tmp_path,
        "--manifest", str(datalist), "--output_dir", str(out),
        "--skip_failed", "True", "--fail_at_end", "False",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "evaluation_per_case.csv", newline="") as f:
        assert [row["case"] for row in csv.DictReader(f)] == ["good_a", "good_b"]
    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["cases"] == 2
    assert sorted(c["case"] for c in summary["failed_cases"]) == ["missing", "nan", "truncated"]
