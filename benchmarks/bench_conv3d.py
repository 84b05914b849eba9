"""3D convolutions of one float32 sample on the CPU: ``unet_monai.networks.onednn.Conv3d`` against ``torch.nn.Conv3d``
(what MONAI's networks use), in the same run.

For one float32 sample PyTorch runs a 3D convolution on oneDNN only when ``C * D * H > 20480``, else on its reference
kernel ``slow_conv3d``. ``Conv3d`` convolves such an input as two overlapping halves in a batch of two. This times,
for the layers of the semi-automated plans of ``benchmarks/semi_automatic.py`` (SCT cord T1: 16-32-64 on
60 x 76 x 76; MSD spleen: 16-32-64-128 on 164 x 164 x 28), each convolution forward and backward, then the whole
training step (forward, the bundle's loss, backward, Adam) of the 3D ``PaperUNet`` of each plan at batch 1, in
channels-last-3d as the bundle trains, with ``nn.Conv3d`` and with ``Conv3d``, and prints the ratios::

    .venv/bin/python benchmarks/bench_conv3d.py [--repeats 8] [--json out.json]   # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from timing import timed
from torch import nn

from unet_monai.losses import PixelWeightedCELoss
from unet_monai.networks import PaperUNet
from unet_monai.networks.onednn import Conv3d, uses_reference_kernel

LAYOUT = torch.channels_last_3d
PLANS = {
    "sct_t1": dict(features=(16, 32, 64), pool_sizes=[[2, 2, 2]] * 2, kernel_sizes=[[3, 3, 3]] * 3, size=(60, 76, 76)),
    "spleen": dict(
        features=(16, 32, 64, 128),
        pool_sizes=[[2, 2, 1], [2, 2, 1], [2, 2, 2]],
        kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]],
        size=(164, 164, 28),
    ),
}


def plan_net(plan: dict, ours: bool) -> PaperUNet:
    """The plan's 3D PaperUNet (BatchNorm), its convolutions ``Conv3d`` (``ours``) or plain ``nn.Conv3d``."""
    torch.manual_seed(0)
    net = PaperUNet(
        3,
        1,
        2,
        features=plan["features"],
        norm="batch",
        pool_sizes=plan["pool_sizes"],
        kernel_sizes=plan["kernel_sizes"],
    )
    if not ours:
        for module in net.modules():
            if isinstance(module, Conv3d):
                module.__class__ = nn.Conv3d  # same parameters, PyTorch's own forward
    return net.to(memory_format=LAYOUT)


def conv_inputs(net: PaperUNet, x: torch.Tensor) -> list[tuple[nn.Conv3d, torch.Size]]:
    """Every convolution of ``net`` with the shape of its input in one forward pass of ``x``."""
    seen: list[tuple[nn.Conv3d, torch.Size]] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0].shape)))
        for m in net.modules()
        if type(m) in (nn.Conv3d, Conv3d)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def layer_times(conv: nn.Conv3d, shape: torch.Size, repeats: int) -> tuple[float, float]:
    """Forward + backward seconds of one convolution on ``shape``, as ``nn.Conv3d`` and as ``Conv3d``."""
    times = []
    for cls in (nn.Conv3d, Conv3d):
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding).to(
            memory_format=LAYOUT
        )
        x = torch.randn(shape).to(memory_format=LAYOUT).requires_grad_(shape[1] > 1)

        times.append(timed(lambda layer=layer, x=x: layer(x).sum().backward(), repeats))
    return times[0], times[1]


def train_step_time(net: PaperUNet, size: tuple[int, ...], repeats: int) -> float:
    x = torch.randn(1, 1, *size).to(memory_format=LAYOUT)
    with torch.no_grad():
        out_shape = net(x).shape[2:]
    y = torch.randint(0, 2, (1, 1, *out_shape)).float()
    loss = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=255)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(net(x), y).backward()
        optimizer.step()

    return timed(step, repeats, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads,")
    print(f"{platform.processor() or platform.machine()}\n")
    rows: dict[str, object] = {}
    for name, plan in PLANS.items():
        x = torch.randn(1, 1, *plan["size"]).to(memory_format=LAYOUT)
        print(f"## {name}: input {plan['size']}, features {plan['features']}")
        print("| convolution input | channels | kernel | PyTorch's kernel | nn.Conv3d ms | Conv3d ms | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        layers = []
        for conv, shape in conv_inputs(plan_net(plan, ours=False), x):
            reference = uses_reference_kernel(torch.empty(shape), conv)
            plain, ours = layer_times(conv, shape, args.repeats) if reference else (float("nan"),) * 2
            layers.append(
                {"shape": list(shape), "out": conv.out_channels, "reference": reference, "plain": plain, "ours": ours}
            )
            kernel = "slow_conv3d" if reference else "oneDNN (unchanged)"
            figures = f"{plain * 1e3:.1f} | {ours * 1e3:.1f} | {plain / ours:.2f}" if reference else "| |"
            channels = f"{conv.in_channels} -> {conv.out_channels}"
            print(f"| {tuple(shape[2:])} | {channels} | {conv.kernel_size} | {kernel} | {figures} |")
        plain, ours = (train_step_time(plan_net(plan, ours=o), plan["size"], args.repeats) for o in (False, True))
        step = f"nn.Conv3d {plain * 1e3:.0f} ms, Conv3d {ours * 1e3:.0f} ms, ratio {plain / ours:.2f}"
        print(f"\ntraining step, batch 1: {step}\n")
        rows[name] = {"layers": layers, "step_plain_s": plain, "step_ours_s": ours}
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
