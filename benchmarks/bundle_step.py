"""The bundle's default train step, built from ``bundles/unet/train.json`` itself: shared by the benchmarks."""

from __future__ import annotations

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
