"""EpochCheckpointSaver: plain state dicts from wrapped networks, one writing rank, the last iteration of a run cut
short."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from unet_monai.handlers import EpochCheckpointSaver


def finished_epoch(epoch: int = 1) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    return engine


def test_saves_every_state_dict(tmp_path: Path) -> None:
    net = torch.nn.Conv2d(1, 2, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": net, "optimizer": optimizer})(finished_epoch())
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(saved) == {"model", "optimizer"}
    assert saved["model"].keys() == net.state_dict().keys()


def test_data_parallel_network_is_saved_unwrapped(tmp_path: Path) -> None:
    net = torch.nn.Conv2d(1, 2, 3)
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.DataParallel(net)})(finished_epoch())
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert sorted(saved) == ["bias", "weight"]  # not module.weight
    torch.nn.Conv2d(1, 2, 3).load_state_dict(saved)


def test_ddp_network_is_saved_unwrapped_on_rank_0(tmp_path: Path) -> None:
    """A one-process gloo group: DistributedDataParallel is saved as its module, like MONAI's CheckpointSaver."""
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        net = torch.nn.Conv2d(1, 2, 3)
        EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.parallel.DistributedDataParallel(net)})(
            finished_epoch()
        )
    finally:
        dist.destroy_process_group()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert sorted(saved) == ["bias", "weight"]


def test_save_on_rank_is_ignored_outside_a_distributed_run(tmp_path: Path) -> None:
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.Conv2d(1, 1, 1)}, save_on_rank=1)(finished_epoch())
    assert (tmp_path / "last.pt").is_file()


def test_other_ranks_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.Conv2d(1, 1, 1)})(finished_epoch())
    assert not list(tmp_path.iterdir())
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.Conv2d(1, 1, 1)}, save_on_rank=1)(finished_epoch())
    assert (tmp_path / "last.pt").is_file()


def test_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        EpochCheckpointSaver(tmp_path / "last.pt", {})
    with pytest.raises(ValueError, match="save_on_rank"):
        EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.Conv2d(1, 1, 1)}, save_on_rank=-1)


def test_attach_removes_the_temporaries_of_a_killed_save(tmp_path: Path) -> None:
    """A run killed while writing ``last.pt`` leaves ``.last.pt.<random>.tmp``; the next run's saver removes it when
    attached, before it writes anything."""
    (tmp_path / ".last.pt.k1ll3d00.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".model.pt.k1ll3d00.tmp").write_bytes(b"another file's")
    saver = EpochCheckpointSaver(tmp_path / "last.pt", {"model": torch.nn.Linear(2, 1)})
    saver.attach(Engine(lambda e, b: None))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.k1ll3d00.tmp"]


def sgd_trainer(net: torch.nn.Module) -> Engine:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine: Engine, batch: int) -> None:
        optimizer.zero_grad()
        net(torch.ones(1, 1)).sum().backward()
        optimizer.step()

    return Engine(step)


def test_a_run_terminated_mid_epoch_saves_its_last_iteration_and_resumes_there(tmp_path: Path) -> None:
    """ignite fires no EPOCH_COMPLETED for an epoch cut by ``terminate()`` (a time budget): the saver also writes on
    TERMINATE, so ``last.pt`` holds the network of the run's last iteration, and the trainer resumes mid-epoch."""
    net = torch.nn.Linear(1, 1, bias=False)
    trainer = sgd_trainer(net)
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": net, "trainer": trainer}).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda engine: engine.terminate())
    trainer.run(range(5), max_epochs=3)  # epoch 1: iterations 1-5; terminated after iteration 2 of epoch 2
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 7
    assert torch.equal(saved["model"]["weight"], net.weight.detach())  # not the weight after iteration 5

    resumed = sgd_trainer(torch.nn.Linear(1, 1, bias=False))
    resumed.load_state_dict(saved["trainer"])
    counted: list[int] = []
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: counted.append(engine.state.iteration))
    resumed.run(range(5))
    assert counted == list(range(8, 16))  # the rest of epoch 2, then epoch 3


def test_a_run_terminated_at_an_epoch_end_is_saved_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    trainer = sgd_trainer(net)
    EpochCheckpointSaver(tmp_path / "last.pt", {"model": net, "trainer": trainer}).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())  # early stopping
    with caplog.at_level("INFO", logger="unet_monai.handlers.checkpoint"):
        trainer.run(range(3), max_epochs=5)
    saved = [r.getMessage().split(" (")[-1] for r in caplog.records if r.name == "unet_monai.handlers.checkpoint"]
    assert saved == ["iteration 3)", "iteration 6)"]  # ignite's own records reach caplog where a test set root INFO
    assert torch.load(tmp_path / "last.pt", weights_only=True)["trainer"]["iteration"] == 6
