"""TrainingReport and CaseMetricsReport on real ignite engines: the files they write and what is in them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from PIL import Image

from unet_monai.handlers import CaseMetricsReport, TrainingReport, case_name


def square_case(shift: int, size: int = 32) -> tuple[MetaTensor, MetaTensor]:
    """A label with a 16x16 square and a prediction shifted by ``shift`` voxels, spacing 2 mm."""
    affine = torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0]))
    label = torch.zeros(1, size, size)
    label[0, 8:24, 8:24] = 1
    pred = torch.roll(label, shift, dims=1)
    return MetaTensor(pred, affine=affine), MetaTensor(label, affine=affine)


def make_trainer_and_validator(output_dir: Path, epochs_with_validation: set[int]) -> tuple[Engine, Engine]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.5)

    def validate_step(engine: Engine, batch: int) -> list[dict]:
        image = torch.rand(1, 24, 20)
        label = (image > 0.5).float()
        pred = torch.cat([1 - label, label])  # one-hot, as the bundle's postprocessing leaves it
        return [{"image": image, "label": label, "pred": pred}]

    validator = Engine(validate_step)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metric(engine: Engine) -> None:
        engine.state.metrics["val_mean_dice"] = 0.7

    def train_step(engine: Engine, batch: int) -> list[dict]:
        return [{"loss": torch.tensor(float(engine.state.iteration))}]

    trainer = Engine(train_step)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine: Engine) -> None:  # what MONAI's ValidationHandler does, registered first
        if engine.state.epoch in epochs_with_validation:
            validator.run(range(3), max_epochs=1)
            validator.state.epoch = engine.state.epoch  # MONAI's evaluator runs at the trainer's epoch

    TrainingReport(output_dir, validator=validator, optimizer=optimizer, num_overlays=2).attach(trainer)
    return trainer, validator


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_report_writes_rows_curves_and_overlays(tmp_path: Path) -> None:
    trainer, _ = make_trainer_and_validator(tmp_path, epochs_with_validation={2})
    trainer.run(range(2), max_epochs=3)
    rows = read_rows(tmp_path / "training_metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["loss"]) for r in rows] == [1.5, 3.5, 5.5]  # mean of the iteration numbers
    assert [r["val_mean_dice"] for r in rows] == ["", "0.7", ""]
    assert all(float(r["lr"]) == 0.5 for r in rows) and list(rows[0])[-1] == "time_s"
    for name, min_size in (("training_curves.png", (400, 200)), ("validation_overlays.png", (300, 300))):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG" and png.size[0] >= min_size[0] and png.size[1] >= min_size[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_training_report_keeps_earlier_epochs_when_resumed(tmp_path: Path) -> None:
    trainer, _ = make_trainer_and_validator(tmp_path, epochs_with_validation=set())
    trainer.run(range(2), max_epochs=3)
    resumed, _ = make_trainer_and_validator(tmp_path, epochs_with_validation=set())
    resumed.state.epoch, resumed.state.iteration, resumed.state.epoch_length = 2, 4, 2  # as CheckpointLoader sets
    resumed.state.max_epochs = 4
    resumed.run(range(2), max_epochs=4)
    assert [int(r["epoch"]) for r in read_rows(tmp_path / "training_metrics.csv")] == [1, 2, 3, 4]


@pytest.mark.parametrize("stop_at", [5, 4], ids=["mid_epoch", "epoch_end"])
def test_training_report_writes_the_iterations_of_a_terminated_epoch(tmp_path: Path, stop_at: int) -> None:
    trainer, _ = make_trainer_and_validator(tmp_path, epochs_with_validation=set())
    metric = trainer.state.metrics

    @trainer.on(Events.EPOCH_COMPLETED)
    def _train_metric(engine: Engine) -> None:
        metric["train_mean_dice"] = 0.1 * engine.state.epoch

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda engine: engine.terminate())
    trainer.run(range(2), max_epochs=5)
    rows = read_rows(tmp_path / "training_metrics.csv")
    if stop_at == 4:  # terminated at the end of epoch 2: its row is the ordinary one, written once
        assert [(int(r["epoch"]), int(r["iteration"])) for r in rows] == [(1, 2), (2, 4)]
        return
    assert [(int(r["epoch"]), int(r["iteration"])) for r in rows] == [(1, 2), (2, 4), (3, 5)]
    assert float(rows[-1]["loss"]) == 5.0 and float(rows[-1]["lr"]) == 0.5 and float(rows[-1]["time_s"]) >= 0
    assert rows[-1]["train_mean_dice"] == ""  # epoch 2's metric is not epoch 3's
    resumed, _ = make_trainer_and_validator(tmp_path, epochs_with_validation=set())
    resumed.state.epoch, resumed.state.iteration, resumed.state.epoch_length = 2, 5, 2  # a mid-epoch checkpoint
    resumed.state.max_epochs = 3
    resumed.run(range(2), max_epochs=3)
    rows = read_rows(tmp_path / "training_metrics.csv")
    assert [(int(r["epoch"]), int(r["iteration"])) for r in rows] == [(1, 2), (2, 4), (3, 6)]


def test_case_metrics_report_writes_per_case_csv_and_summary(tmp_path: Path) -> None:
    cases = [square_case(0), square_case(4)]

    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        pred, label = cases[batch[0]["index"]]
        return [{"pred": pred, "label": label}]

    evaluator = Engine(step)  # the batch as MONAI's evaluator leaves it: decollated, with the datalist keys
    report = CaseMetricsReport(tmp_path / "out", classes={"1": "square"}, hd95=True, boundary_class=1, prefix="e_")
    report.attach(evaluator)
    evaluator.run([[{"case_id": f"case{i}", "index": i}] for i in range(2)], max_epochs=1)
    rows = read_rows(tmp_path / "out" / "e_per_case.csv")
    assert [r["case"] for r in rows] == ["case0", "case1"]
    assert float(rows[0]["dice_square"]) == 1.0 and float(rows[0]["pixel_error"]) == 0.0
    assert float(rows[1]["dice_square"]) == pytest.approx(2 * 192 / 512)
    assert float(rows[1]["hd95_square"]) == pytest.approx(8.0)  # 4 voxels x 2 mm from the affine
    summary = json.loads((tmp_path / "out" / "e_summary.json").read_text())
    assert summary["cases"] == 2
    assert summary["metrics"]["dice_square"]["mean"] == pytest.approx((1 + 0.75) / 2)
    assert set(summary["metrics"]) >= {"iou_square", "rand_error", "v_info", "pixel_error"}


def test_case_names_come_from_case_id_or_file_name() -> None:
    image = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "/data/ct/case_007.nii.gz"})
    assert case_name({"case_id": "a1", "image": image}) == "a1"
    assert case_name({"image": image}) == "case_007.nii.gz"
    assert case_name({"pred": np.zeros(3)}) == "?"


def test_case_metrics_report_refuses_bad_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="integer label values"):
        CaseMetricsReport(tmp_path, classes={"membrane": "1"})
    with pytest.raises(ValueError, match="at least one"):
        CaseMetricsReport(tmp_path, classes={})
