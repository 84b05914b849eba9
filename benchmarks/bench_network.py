"""Speed of PaperUNet against MONAI's BasicUNet of the same width, and against this CPU's GEMM ceiling.

For each network and precision (fp32, fp32 channels-last, bf16 autocast + channels-last) it times a forward
pass (no grad) and a train step (forward, loss, backward, optimizer step), counts the FLOPs of each with
``torch.utils.flop_counter`` and prints achieved GFLOP/s, the ratio to a matmul ceiling measured in the same
run, and PaperUNet/BasicUNet time ratios. The last block times the bundle's default train step (its
network, patch size, batch, loss, optimizer and precision, read from ``bundles/unet/train.json``).

    python benchmarks/bench_network.py            # about 3 minutes on 2 cores
    python benchmarks/bench_network.py --quick    # smaller inputs, fewer repeats: checks that it runs
    python benchmarks/bench_network.py --bundle-only   # the ceilings and the bundle's train step only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from bundle_step import bundle_parser, bundle_train_step
from monai.networks.nets import BasicUNet
from timing import timed
from torch.utils.flop_counter import FlopCounterMode

from unet_monai.networks import PaperUNet

MODES = {
    "fp32": (torch.float32, False),
    "fp32+cl": (torch.float32, True),
    "bf16+cl": (torch.bfloat16, True),
}


def gemm_ceilings(dtype: torch.dtype, repeats: int, quick: bool) -> dict[str, float]:
    """GFLOP/s of two GEMMs in ``dtype``: ``torch.mm`` (MKL for fp32, oneDNN for bf16) and oneDNN's GEMM as
    a channels-last 1x1 convolution (M = 64*64 pixels, N = K = 1024 channels), the kernel family that the
    network's convolutions run on. The larger of the two, best of `repeats`, is the ceiling."""
    n, channels, side = (1024, 256, 32) if quick else (4096, 1024, 64)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    fmt = torch.channels_last
    x = torch.randn(1, channels, side, side, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(channels, channels, 1, 1, dtype=dtype).contiguous(memory_format=fmt)
    with torch.no_grad():
        conv = 2 * channels**2 * side**2 / timed(lambda: torch.nn.functional.conv2d(x, w), repeats, best=True) / 1e9
    return {"mm": 2 * n**3 / timed(lambda: torch.mm(a, b), repeats, best=True) / 1e9, "onednn_1x1_conv": conv}


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Case:
    """One network on one input, in one precision mode: forward and train-step closures."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, mode: str, loss_fn: Callable, optimizer: str) -> None:
        dtype, channels_last = MODES[mode]
        if channels_last:
            fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
            net, x = net.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        self.net, self.x, self.dtype, self.loss_fn = net, x, dtype, loss_fn
        params = net.parameters()
        self.opt = torch.optim.Adam(params, 1e-4) if optimizer == "adam" else torch.optim.SGD(params, 1e-4, 0.99)

    def forward(self) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            self.net(self.x)

    def train_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.net(self.x)
        loss = self.loss_fn(out.float())
        loss.backward()
        self.opt.step()


def mean_loss(out: torch.Tensor) -> torch.Tensor:
    return out.mean()


def measure_phases(
    label: str, mode: str, phases: dict[str, Callable[[], object]], repeats: int, ceiling: float
) -> dict:
    """FLOPs, median time and achieved GFLOP/s of each phase (forward, train), printed as one line each."""
    row = {}
    for phase, fn in phases.items():
        flops, seconds = count_flops(fn), timed(fn, repeats)
        row[phase] = {
            "seconds": seconds,
            "gflops": flops / 1e9,
            "gflop_s": flops / seconds / 1e9,
            "of_ceiling": flops / seconds / 1e9 / ceiling,
        }
        print(
            f"  {label:<28} {mode:<8} {phase:<7} {seconds * 1e3:8.1f} ms  {flops / 1e9:7.1f} GFLOP  "
            f"{flops / seconds / 1e9:6.0f} GFLOP/s  {100 * row[phase]['of_ceiling']:4.0f}% of ceiling",
            flush=True,
        )
    return row


def measure(
    name: str,
    make_net: Callable[[], torch.nn.Module],
    x: torch.Tensor,
    repeats: int,
    ceilings: dict,
    loss_fn: Callable = mean_loss,
    optimizer: str = "sgd",
    modes: tuple[str, ...] = tuple(MODES),
) -> dict:
    torch.manual_seed(0)
    results = {}
    for mode in modes:
        case = Case(make_net(), x.clone(), mode, loss_fn, optimizer)
        ceiling = ceilings["bf16" if mode.startswith("bf16") else "fp32"]
        row = measure_phases(name, mode, {"forward": case.forward, "train": case.train_step}, repeats, ceiling)
        results[mode] = row
    return results


def bundle_default_case(repeats: int, ceilings: dict) -> dict:
    """The bundle's default train step: network (with its memory format), optimizer, loss and train inferer
    (autocast precision) from train.json, on one batch of default-sized patches."""
    forward, train_step, info = bundle_train_step(bundle_parser())
    precision = info["precision"]
    print(
        f"\nbundle default train step: {len(info['patch'])}D, features {info['features']}, batch {info['batch']} x "
        f"{info['patch']} -> {info['output']}, {info['loss']} + {info['optimizer']}, {precision}"
    )
    ceiling = ceilings["bf16" if precision == "bfloat16" else "fp32"]
    result: dict = measure_phases(
        "bundle default", precision, {"forward": forward, "train": train_step}, repeats, ceiling
    )
    result["precision"] = precision
    return result


def compare_networks(size: int, repeats: int, ceilings: dict) -> tuple[dict, dict]:
    """The 2D paper net against BasicUNet of the same widths, in every mode; prints the time ratios."""
    widths = (64, 128, 256, 512, 1024)
    x = torch.randn(1, 1, size, size)
    print(f"2D, batch 1, {size}x{size}, features {widths}, SGD momentum 0.99")
    paper = measure("PaperUNet (valid, paper)", lambda: PaperUNet(2, 1, 2, features=widths), x, repeats, ceilings)
    basic = measure("BasicUNet (same)", lambda: BasicUNet(2, 1, 2, features=(*widths, widths[0])), x, repeats, ceilings)

    print("\nPaperUNet time / BasicUNet time (below 1: PaperUNet faster; GFLOP/s compares efficiency):")
    for mode in MODES:
        for phase in ("forward", "train"):
            ratio = paper[mode][phase]["seconds"] / basic[mode][phase]["seconds"]
            eff = paper[mode][phase]["gflop_s"] / basic[mode][phase]["gflop_s"]
            print(f"  {mode:<8} {phase:<7} time ratio {ratio:5.2f}   GFLOP/s ratio {eff:5.2f}")
    return paper, basic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--bundle-only", action="store_true", help="skip the PaperUNet / BasicUNet comparison")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    size = 188 if args.quick else 572
    torch.set_num_threads(torch.get_num_threads())

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    gemms = {
        "fp32": gemm_ceilings(torch.float32, repeats, args.quick),
        "bf16": gemm_ceilings(torch.bfloat16, repeats, args.quick),
    }
    ceilings = {dtype: max(g.values()) for dtype, g in gemms.items()}
    for dtype, g in gemms.items():
        print(
            f"GEMM ceiling {dtype}: {ceilings[dtype]:.0f} GFLOP/s (torch.mm {g['mm']:.0f}, "
            f"oneDNN 1x1 conv {g['onednn_1x1_conv']:.0f})"
        )
    print()

    paper, basic = ({}, {}) if args.bundle_only else compare_networks(size, repeats, ceilings)

    bundle = bundle_default_case(repeats, ceilings)
    share = bundle["train"]["of_ceiling"]
    print(f"\nbundle default train step: {100 * share:.0f}% of the {bundle['precision']} ceiling (goal: >= 65%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"gemms": gemms, "ceilings": ceilings, "paper": paper, "basic": basic, "bundle": bundle}, indent=2
            )
        )


if __name__ == "__main__":
    main()
