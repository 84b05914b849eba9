"""EpochCheckpointSaver: plain state dicts from wrapped networks, one writing rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Engine

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
