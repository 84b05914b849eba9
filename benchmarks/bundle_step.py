"""The bundle for the benchmarks: its default train step, built from ``bundles/unet/train.json`` itself, and its
command line run as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]


def bundle_parser(bundle_root: Path = REPO / "benchmarks" / "results" / "bundle") -> ConfigParser:
    """train.json with outputs (and the synthetic data set) under ``bundle_root``."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "unet" / "train.json"))
    parser["bundle_root"] = str(bundle_root)
    return parser


def bundle_train_step(parser: ConfigParser) -> tuple[Callable[[], None], Callable[[], None], dict[str, Any]]:
    """Forward and train-step closures of the bundle's network, optimizer, loss and train inferer on one
    batch of default-sized random patches, and a description of the step."""
    net = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    inferer = parser.get_parsed_content("train::inferer")
    patch = parser.get_parsed_content("patch_size")
    batch = parser.get_parsed_content("batch_size")
    out_shape = net.output_shape(patch)
    x = torch.randn(batch, 1, *patch)
    label = torch.randint(0, 2, (batch, 1, *out_shape)).float()
    label = torch.cat([label, 1 + 9 * torch.rand_like(label)], dim=1)  # (class, weight), as the bundle's loss takes

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(inferer(x, net), label).backward()
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            inferer(x, net)

    info = {
        "features": net.features,
        "batch": batch,
        "patch": tuple(patch),
        "output": out_shape,
        "loss": type(loss_fn).__name__,
        "optimizer": type(optimizer).__name__,
        "precision": parser.get_parsed_content("precision"),
    }
    return forward, train_step, info


def run_bundle_cli(workflow: str, configs: list[Path | str], cwd: Path, *args: str) -> float:
    """``python -m monai.bundle run <workflow>`` with ``configs`` in ``cwd`` (its output in ``cwd/<workflow>.log``);
    returns its wall time (s), or exits naming the log when the command fails."""
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", config_list, *args]
    log = cwd / f"{workflow}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{workflow} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start
