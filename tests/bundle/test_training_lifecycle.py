"""Training runs over their lifetime through MONAI's CLI (real subprocesses): killed and resumed, annealed under a
time budget, averaged weights written beside the last ones."""

from __future__ import annotations

import csv
import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_unet_bundle import REPO, TINY, TINY_INFER, bundle_command, run_bundle


@pytest.mark.integration
def test_killed_training_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    """SIGKILL mid-run, then ``--resume True``: training goes on from the last saved epoch and finishes."""
    overrides = [*TINY, "--iterations_per_epoch", "2", "--val_interval", "5", "--epochs", "10"]
    cmd = bundle_command("training", ["bundles/unet/train.json"], tmp_path, *overrides)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while "epoch 3: training state saved" not in log.read_text() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = torch.load(tmp_path / "models" / "last.pt", weights_only=True)  # complete, loadable: written atomically
    epoch = int(saved["trainer"]["iteration"]) // int(saved["trainer"]["epoch_length"])  # ignite keeps iterations
    assert 3 <= epoch < 10

    resumed = run_bundle("training", ["bundles/unet/train.json"], tmp_path, *overrides, "--resume", "True")
    completed = [int(n) for n in re.findall(r"Epoch\[(\d+)\] Complete", resumed.stdout + resumed.stderr)]
    trainer_epochs = sorted(set(completed))
    assert trainer_epochs[0] == epoch + 1 and trainer_epochs[-1] == 10
    assert not list((tmp_path / "models").glob(".*.tmp"))


@pytest.mark.integration
def test_bundle_time_limit_anneals_per_iteration(tmp_path: Path) -> None:
    """``--time_limit_minutes`` with ``--final_lr_fraction`` through the CLI: the training report's rate at each
    epoch's first iteration is the cosine over the iterations (the time limit is far away)."""
    epochs = ["--epochs", "3", "--iterations_per_epoch", "2", "--val_interval", "3"]
    schedule = ["--time_limit_minutes", "30", "--final_lr_fraction", "0.1", "--learning_rate", "0.001"]
    run_bundle("training", ["bundles/unet/train.json"], tmp_path, *TINY, *epochs, *schedule, cwd=tmp_path)
    with open(tmp_path / "eval" / "training_metrics.csv", newline="") as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    assert rates == pytest.approx(
        [0.001 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 6))) for i in (0, 2, 4)], rel=1e-3
    )


@pytest.mark.integration
def test_weight_average_checkpoint_is_written_and_segments(tmp_path: Path) -> None:
    """``--ema_momentum``: training also writes ``models/model_ema.pt`` (the averaged weights, not the last ones),
    and inference takes it as ``--ckpt_path``."""
    epochs = ["--epochs", "2", "--iterations_per_epoch", "2", "--val_interval", "2"]
    run_bundle("training", ["bundles/unet/train.json"], tmp_path, *TINY, *epochs, "--ema_momentum", "0.1")
    average = torch.load(tmp_path / "models" / "model_ema.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)["model"]
    assert set(average) == set(last)
    assert any(not torch.equal(average[k], last[k]) for k in last if last[k].is_floating_point())
    ckpt = str(tmp_path / "models" / "model_ema.pt")
    run_bundle("inference", ["bundles/unet/inference.json"], tmp_path, *TINY_INFER, "--ckpt_path", ckpt)
    assert len(list((tmp_path / "eval").glob("*_seg.nii.gz"))) == 2
