"""A failed run's first ERROR line names the case's file and the cause (ErrorReport), in a real evaluator and
through the bundle's CLI; an output-side fault reads as what it is."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointLoader, StatsHandler
from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd
from test_unet_bundle import REPO, TINY_INFER, bundle_command

from unet_monai.handlers import ErrorReport
from unet_monai.io import SaveLabelsd, StrictLoadImaged
from unet_monai.networks import PaperUNet

ENGINE_LOGGER = "ignite.engine.engine.SupervisedEvaluator"


def write_cases(folder: Path) -> dict[str, Path]:
    """A good 2D case and a ``.nii.gz`` cut to a third of its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(24, 20)).astype(np.float32), np.eye(4)), good)
    bad = folder / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    return {"good": good, "bad": bad}


def evaluator(
    items: list[dict], postprocessing: Compose | None = None, handlers: list | None = None, shuffle: bool = False
) -> SupervisedEvaluator:
    load = Compose([StrictLoadImaged("image", reader="NibabelReader", image_only=True), EnsureChannelFirstd("image")])
    engine = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items, transform=load), batch_size=1, shuffle=shuffle),
        network=torch.nn.Conv2d(1, 2, 1),
        postprocessing=postprocessing,
        val_handlers=[*(handlers or []), ErrorReport()],
    )
    return engine


def first_error(caplog: pytest.LogCaptureFixture) -> str:
    return next(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_a_loading_error_names_the_case_file_and_cause(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cases = write_cases(tmp_path)
    items = [{"image": str(cases["good"]), "case_id": "good"}, {"image": str(cases["bad"]), "case_id": "bad"}]
    stats = logging.getLogger("monai.handlers.StatsHandler")  # MONAI's get_logger: it does not propagate
    stats.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError):
            evaluator(items, handlers=[StatsHandler(iteration_log=False)]).run()
    finally:
        stats.removeHandler(caplog.handler)
    message = first_error(caplog)
    assert message.startswith(f"case bad ({cases['bad']}) failed while loading: ValueError: {cases['bad']} is a")
    assert "truncated or corrupt gzip file" in message and "applying transform" not in message
    engine_lines = [r.getMessage() for r in caplog.records if r.name == ENGINE_LOGGER]
    assert engine_lines == [message, f"run stopped: {message}"]  # ignite's two lines, both rewritten
    stats_lines = [r for r in caplog.records if r.name == stats.name]
    assert [r.getMessage() for r in stats_lines] == [message, message]  # StatsHandler's, each before a traceback
    assert all(r.exc_info for r in stats_lines)


def test_out_of_order_loading_gives_the_cause_which_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a shuffling loader the failing item is not known before it is loaded; our reader's error names it."""
    cases = write_cases(tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError):
        evaluator([{"image": str(cases["bad"])}], shuffle=True).run()
    message = first_error(caplog)
    assert message.startswith(f"failed while loading a case: ValueError: {cases['bad']} is a truncated or corrupt")


def test_a_write_error_names_the_case_and_the_output_fault(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cases = write_cases(tmp_path / "in")
    (tmp_path / "out").write_text("a file where the output folder should be")
    save = Compose([AsDiscreted("pred", argmax=True), SaveLabelsd("pred", output_dir=tmp_path / "out" / "labels")])
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError):
        evaluator([{"image": str(cases["good"])}], postprocessing=save).run()
    message = first_error(caplog)
    assert message.startswith(
        f"case {cases['good']} failed during inference, postprocessing or writing: NotADirectoryError:"
    )
    assert f"cannot write {tmp_path / 'out' / 'labels' / 'good_seg.nii.gz'}: {tmp_path / 'out'} is a file" in message


def test_a_failure_before_any_case_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cases = write_cases(tmp_path)
    missing = tmp_path / "models" / "model.pt"
    loader = CheckpointLoader(load_path=str(missing), load_dict={"model": torch.nn.Conv2d(1, 2, 1)})
    with caplog.at_level(logging.ERROR), pytest.raises(FileNotFoundError):
        evaluator([{"image": str(cases["good"])}], handlers=[loader]).run()
    message = first_error(caplog)
    assert message.startswith("run stopped: failed before the first case: FileNotFoundError:")
    assert str(missing) in message


@pytest.mark.integration
def test_cli_first_error_line_names_the_file_and_the_cause(tmp_path: Path) -> None:
    """``python -m monai.bundle run inference ... --input <a corrupt .nii.gz>``: the first line of the output that
    contains "ERROR" names the file and says what is wrong with it (one CLI start, an untrained tiny network)."""
    cases = write_cases(tmp_path / "cases")
    (tmp_path / "models").mkdir()
    net = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16))
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    configs = ["bundles/unet/inference.json"]  # its handlers include ErrorReport
    cmd = bundle_command("inference", configs, tmp_path, *TINY_INFER, "--input", str(cases["bad"]))
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stdout.splitlines() if "ERROR" in line]
    assert errors, proc.stdout[-3000:]
    assert f"case {cases['bad']} failed while loading" in errors[0], errors[0]
    assert f"{cases['bad']} is a truncated or corrupt gzip file" in errors[0], errors[0]
    assert not [line for line in errors if "applying transform" in line]  # none of the ERROR lines is MONAI's


def test_skip_mode_end_of_run_error_is_not_blamed_on_a_case(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In skip mode the run ends with the failure report's error: the line says it came at the end of the run."""
    from unet_monai.data import FailureTolerantDataset
    from unet_monai.handlers import CaseFailureReport, SkipFailedIteration

    cases = write_cases(tmp_path)
    report = CaseFailureReport(tmp_path / "out" / "failures.csv")
    load = Compose([StrictLoadImaged("image", reader="NibabelReader", image_only=True), EnsureChannelFirstd("image")])
    items = [{"image": str(cases["bad"]), "case_id": "bad"}, {"image": str(cases["good"]), "case_id": "good"}]
    engine = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(FailureTolerantDataset(Dataset(items, transform=load)), batch_size=1),
        network=torch.nn.Conv2d(1, 2, 1),
        iteration_update=SkipFailedIteration(report),
        val_handlers=[report, ErrorReport()],
    )
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="1 case"):
        engine.run()
    engine_lines = [r.getMessage() for r in caplog.records if r.name == ENGINE_LOGGER]
    assert engine_lines == [
        "run stopped: failed at the end of the run: RuntimeError: 1 case(s) failed and were skipped; they are listed "
        f"in {tmp_path / 'out' / 'failures.csv'}. Every other case was processed."
    ]
