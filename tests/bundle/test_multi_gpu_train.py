"""``multi_gpu_train.json``: DDP training with torchrun (2 processes, gloo on CPU), and its rank filter."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from unet_monai.networks import PaperUNet

REPO = Path(__file__).resolve().parents[2]
CONFIG = "['bundles/unet/train.json','bundles/unet/multi_gpu_train.json']"
TINY = ["--features", "[4,8,16]", "--val_output_patch_size", "[128,128]", "--output_patch_size", "[36,36]"]
SHORT = ["--iterations_per_epoch", "2", "--val_interval", "1", "--batch_size", "2"]


def torchrun() -> list[str]:
    """torchrun next to this Python (the virtualenv's), else ``python -m torch.distributed.run``."""
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def run_ddp_training(bundle_root: Path, log_dir: Path, *overrides: str) -> dict[int, str]:
    """Train with 2 processes; return each rank's stdout + stderr.

    ``--log_dir`` with ``--redirects 3`` makes torchrun write every local rank's streams to its own files,
    ``<log_dir>/<run id>/attempt_<n>/<local rank>/{stdout,stderr}.log``: what a rank printed is told apart by
    the file it is in, not by console line prefixes (which differ between torch versions) or by interleaving.
    ``--standalone`` takes a free port, so concurrent runs do not collide on torchrun's default 29500.
    """
    cmd = [
        *torchrun(),
        "--standalone",
        "--nproc_per_node=2",
        "--log_dir",
        str(log_dir),
        "--redirects",
        "3",
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        CONFIG,
        "--bundle_root",
        str(bundle_root),
        *TINY,
        *SHORT,
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    logs = {}
    for rank in (0, 1):
        files = sorted(log_dir.glob(f"*/attempt_*/{rank}/std*.log"))
        logs[rank] = "\n".join(f.read_text() for f in files)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}\n"
        f"rank 0:\n{logs[0][-3000:]}\nrank 1:\n{logs[1][-3000:]}"
    )
    assert len(list(log_dir.glob("*/attempt_*"))) == 1, "torchrun restarted the workers"
    assert all(logs.values()), f"no per-rank logs under {log_dir}"
    return logs


def trainer_epochs(log: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete", log)})


def load_plain(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's network state, loaded without pickle code, that fits the bare (un-wrapped) network."""
    state = torch.load(path, weights_only=True)
    state = state.get("model", state)  # last.pt holds the training state, model.pt the bare state dict
    assert not [k for k in state if k.startswith("module.")], f"{path}: DDP's module. prefix was saved"
    PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16)).load_state_dict(state)
    return state


@pytest.mark.integration
def test_torchrun_training_writes_once_on_rank_0(tmp_path: Path) -> None:
    """Two ranks train one model; only rank 0 checkpoints, saves metrics and logs stats.

    The first run sets ``--other_ranks_log_level INFO`` (rank > 0 logs only warnings by default), so rank 1's
    log has its engine lines: that it has no StatsHandler or "saved" line then shows those handlers are not
    attached there, rather than silenced. ``--time_limit_minutes 60`` exercises the rank-synchronised time
    budget (rank 0's clock broadcast per iteration) without stopping the run.
    """
    logs = run_ddp_training(
        tmp_path, tmp_path / "logs1", "--epochs", "2", "--other_ranks_log_level", "INFO", "--time_limit_minutes", "60"
    )
    rank0, rank1 = logs[0], logs[1]
    assert trainer_epochs(rank0) == trainer_epochs(rank1) == [1, 2]  # both ranks ran, rank 1 logging at INFO
    for epoch in (1, 2):
        assert rank0.count(f"epoch {epoch}: training state saved") == 1
        assert f"Epoch[{epoch}] Metrics -- val_mean_dice" in rank0  # StatsHandler of the evaluator
        assert f"Epoch[{epoch}] Metrics -- train_mean_dice" in rank0  # StatsHandler of the trainer
    assert "training (budget 60 min)" in rank0  # TimeBudget's bar, in place of ignite's with a time budget
    assert "Epoch [1/2]" not in rank0
    for line in ("training state saved", "Metrics --", "Key metric", "training (budget"):
        assert line not in rank1, f"rank 1 logged {line!r}"

    models, output = tmp_path / "models", tmp_path / "eval"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt"]  # no temporary files left
    load_plain(models / "model.pt")  # MONAI's CheckpointSaver (best val_mean_dice)
    load_plain(models / "last.pt")  # EpochCheckpointSaver
    with open(output / "training_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]  # written by rank 0 only, once per epoch
    assert 0.0 <= float(rows[-1]["val_mean_dice"]) <= 1.0  # all-gathered over both ranks' validation cases
    saved = torch.load(models / "last.pt", weights_only=True)
    assert int(saved["trainer"]["iteration"]) // int(saved["trainer"]["epoch_length"]) == 2


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_training_resumes(tmp_path: Path) -> None:
    """``--resume True`` under torchrun goes on from rank 0's ``last.pt``; ignite's bar and the engine's INFO lines
    stay on rank 0 (slow: two torchrun launches of two ranks each)."""
    run_ddp_training(tmp_path, tmp_path / "logs1", "--epochs", "2")
    models = tmp_path / "models"
    logs = run_ddp_training(tmp_path, tmp_path / "logs2", "--epochs", "3", "--resume", "True")
    rank0, rank1 = logs[0], logs[1]
    assert "Restored all variables from" in rank0
    assert trainer_epochs(rank0) == [3]  # epochs 1 and 2 came from last.pt
    assert rank0.count("training state saved") == 1
    assert "Epoch [3/3]" in rank0 and "Epoch [3/3]" not in rank1  # ignite's bar, without a time budget: rank 0 only
    assert not re.search(r"ignite\.engine\.engine\.\w+ - INFO", rank1)  # other ranks log warnings only by default
    resumed = torch.load(models / "last.pt", weights_only=True)
    assert int(resumed["trainer"]["iteration"]) // int(resumed["trainer"]["epoch_length"]) == 3
    load_plain(models / "last.pt")


def test_rank_filter_keeps_only_every_rank_handlers(tmp_path: Path) -> None:
    """Handlers are filtered by type: rank 0 keeps all; other ranks keep those that must run on every rank.

    MetricsSaver writes on rank 0 only but all-gathers file names on every rank, so it stays everywhere
    (without it on rank 1, rank 0 waits in that all-gather for ever). Writers that train.json gains later
    (TensorBoard, reports) are left out on rank > 0 without naming them.
    """
    from ignite.handlers import ProgressBar
    from monai.handlers import (
        CheckpointSaver,
        LrScheduleHandler,
        MetricsSaver,
        StatsHandler,
        TensorBoardStatsHandler,
        ValidationHandler,
    )

    net = torch.nn.Conv2d(1, 1, 1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(torch.optim.SGD(net.parameters(), lr=0.1))
    handlers = [
        LrScheduleHandler(scheduler),
        ValidationHandler(interval=1),
        StatsHandler(),
        TensorBoardStatsHandler(log_dir=str(tmp_path / "tb")),
        MetricsSaver(save_dir=str(tmp_path)),
        CheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True),
        ProgressBar(),
        object(),  # any other handler, e.g. one added to train.json later
    ]
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / "unet" / f) for f in ("train.json", "multi_gpu_train.json")])
    for rank, expected in ((0, handlers), (1, [handlers[0], handlers[1], handlers[4]])):
        parser["rank"] = rank  # torch.distributed.get_rank() in a real run
        parser.parse(reset=True)
        assert parser.get_parsed_content("handlers_of_this_rank")(handlers) == expected


def test_overlay_overrides_existing_ids() -> None:
    """Every id the overlay sets, except the ones it adds, exists in train.json: MONAI would add a renamed or
    misspelt id silently instead of overriding it (a sampler on a data loader that is no longer used)."""
    train = ConfigParser()
    train.read_config(str(REPO / "bundles" / "unet" / "train.json"))
    overlay = ConfigParser.load_config_file(REPO / "bundles" / "unet" / "multi_gpu_train.json")
    added = {
        "rank", "every_rank_handlers", "handlers_of_this_rank", "other_ranks_log_level", "finalize",
        "validate::sampler", "validate::dataloader::sampler",
    }  # fmt: skip
    assert added <= set(overlay)
    for key in set(overlay) - added:
        assert key in train, f"multi_gpu_train.json sets {key}, which train.json does not have"
