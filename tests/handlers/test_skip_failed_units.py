"""The pieces of skip-and-report on their own: root causes, the tolerant dataset, the failure report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from monai.data import Dataset
from monai.transforms import Compose, LoadImaged

from unet_monai.data import FailureTolerantDataset
from unet_monai.data.failure_tolerant import ERROR_KEY, FAILED_KEY, reported_cause
from unet_monai.handlers import CaseFailureReport


def test_reported_cause_unwraps_monai_transform_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(RuntimeError) as info:
        Compose([LoadImaged("image")])({"image": str(missing)})
    assert "applying transform" in str(info.value)  # MONAI's wrapper ...
    assert "applying transform" not in reported_cause(info.value)  # ... is peeled off
    assert "nope.nii.gz" in reported_cause(info.value)  # the reader's error, naming the file, is kept


def test_tolerant_dataset_turns_a_loading_error_into_a_marker(tmp_path: Path, write_nifti) -> None:  # type: ignore[no-untyped-def]
    good = write_nifti("good.nii.gz")
    data = [{"image": str(good), "case_id": "a"}, {"image": str(tmp_path / "gone.nii.gz"), "case_id": "b"}]
    dataset = FailureTolerantDataset(Dataset(data, transform=LoadImaged("image", image_only=True)))
    assert len(dataset) == 2
    assert dataset[0]["image"].shape == (16, 16)
    marker = dataset[1]
    assert marker[FAILED_KEY] == "b" and "gone.nii.gz" in marker[ERROR_KEY]


def test_failure_report_lists_cases_and_fails_at_the_end(tmp_path: Path) -> None:
    report = CaseFailureReport(tmp_path / "failures.csv")
    report.completed()  # nothing failed: nothing written, no error
    assert not (tmp_path / "failures.csv").exists()
    report.add("case1", "loading", "ValueError: x.nii.gz has NaN voxels")
    report.add("case2", "inference", "RuntimeError: out of memory")
    with open(tmp_path / "failures.csv", newline="") as f:
        assert [r["case"] for r in csv.DictReader(f)] == ["case1", "case2"]
    with pytest.raises(RuntimeError, match="2 case\\(s\\) failed"):
        report.completed()
    logged_only = CaseFailureReport(tmp_path / "f2.csv", fail_at_end=False)
    logged_only.add("case3", "loading", "ValueError: bad")
    logged_only.completed()  # logs, does not raise
    assert (tmp_path / "f2.csv").is_file()
