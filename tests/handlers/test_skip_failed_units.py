"""The pieces of skip-and-report on their own: root causes, the tolerant dataset, the failure report (also when it
cannot be written)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, EnsureChannelFirstd, Lambda, LoadImaged

from unet_monai.data import FailureTolerantDataset
from unet_monai.data.failure_tolerant import ERROR_KEY, FAILED_KEY, reported_cause
from unet_monai.handlers import CaseFailureReport, SkipFailedIteration


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


def test_an_unwritable_failure_report_is_logged_and_the_run_goes_on(
    tmp_path: Path,
    write_nifti,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``failures.csv``'s folder is a regular file (a real ENOTDIR, which root cannot bypass as it does mode bits):
    each failure is logged, the report's write failure is logged as an ERROR naming the file and the cause, the
    later good case is still run, and the run ends with an error that lists the failed cases."""
    (tmp_path / "out").write_text("a file where the output folder should be")
    report_path = tmp_path / "out" / "failures.csv"
    report = CaseFailureReport(report_path)
    data = [
        {"image": str(tmp_path / "gone.nii.gz"), "case_id": "gone"},
        {"image": str(write_nifti("good.nii.gz")), "case_id": "good"},
        {"image": str(tmp_path / "lost.nii.gz"), "case_id": "lost"},
        {"image": str(write_nifti("fine.nii.gz")), "case_id": "fine"},
    ]
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    processed: list[str] = []

    def record(case: dict) -> dict:  # the postprocessing, per case (decollated): only cases that loaded reach it
        processed.append(case["case_id"])
        return case

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(FailureTolerantDataset(Dataset(data, transform=load)), batch_size=1),
        network=torch.nn.Conv2d(1, 1, 1),
        postprocessing=Lambda(record),
        iteration_update=SkipFailedIteration(report),
        val_handlers=[report],
    )
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError) as info:
        evaluator.run()
    assert processed == ["good", "fine"]  # the case after the report's first failed write still ran
    logged = [r.getMessage() for r in caplog.records if r.name == "unet_monai.handlers.skip_failed"]
    unwritable = [m for m in logged if "could not be written" in m]
    assert len(unwritable) == 2  # one per failure: every failure tries the report again
    assert all(f"cannot write {report_path}: {tmp_path / 'out'} is a file, not a folder" in m for m in unwritable)
    message = str(info.value)
    assert "2 case(s) failed and were skipped" in message and f"{report_path} could not be written" in message
    assert "they are: gone, lost" in message


def test_the_failure_report_is_written_again_once_it_can_be(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("in the way")
    report = CaseFailureReport(tmp_path / "out" / "failures.csv")
    report.add("case1", "loading", "ValueError: x")
    assert report.write_error is not None
    (tmp_path / "out").unlink()  # the user frees the path while the run goes on
    report.add("case2", "inference", "RuntimeError: y")
    assert report.write_error is None
    assert list(failures(tmp_path / "out" / "failures.csv")) == ["case1", "case2"]  # both, not just the last
    with pytest.raises(RuntimeError, match=r"they are listed in .*failures.csv"):
        report.completed()


def failures(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}
