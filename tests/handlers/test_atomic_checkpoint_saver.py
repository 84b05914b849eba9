"""AtomicCheckpointSaver: MONAI's best-model saving, written atomically (a failed write keeps the old file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import AtomicCheckpointSaver


class Unpicklable(torch.nn.Module):
    """A module whose state dict torch.save cannot write once ``broken`` is set (a stand-in for a failing disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.broken = False

    def state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        state = super().state_dict(*args, **kwargs)
        if self.broken:
            state["bad"] = lambda: None  # pickling fails inside torch.save
        return state


def test_best_model_is_saved_by_metric_and_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    net = Unpicklable()
    scores = iter([0.5, 0.7, 0.6, 0.9])
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine: Engine) -> None:
        engine.state.metrics["dice"] = next(scores)
        net.weight.data.fill_(engine.state.metrics["dice"])

    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_name="dice",
        key_metric_filename="model.pt",
    )  # fmt: skip
    saver.attach(evaluator)
    for _ in range(3):
        evaluator.run([0], max_epochs=1)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert float(state["weight"][0]) == pytest.approx(0.7)  # the best of 0.5, 0.7, 0.6

    net.broken = True
    with pytest.raises(Exception):  # noqa: B017 - pickling errors differ between torch versions
        evaluator.run([0], max_epochs=1)  # 0.9 is better: a write is tried and fails
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert float(state["weight"][0]) == pytest.approx(0.7)  # the old best is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_a_fixed_name_loses_the_temporaries_of_a_killed_save(tmp_path: Path) -> None:
    (tmp_path / ".model.pt.k1ll3d00.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".last.pt.k1ll3d00.tmp").write_bytes(b"another file's")
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": torch.nn.Linear(2, 1)}, save_key_metric=True,
        key_metric_filename="model.pt",
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.k1ll3d00.tmp"]
