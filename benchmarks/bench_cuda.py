"""CUDA figures for the first machine with a GPU: PaperUNet against MONAI's BasicUNet of the same width (train step
with AMP, forward pass), and overlap-tile inference against MONAI's ``sliding_window_inference`` on a 3D volume,
all on the same device in one run; prints times and ratios (ours / MONAI: below 1 is faster).

    python benchmarks/bench_cuda.py                          # on a CUDA device, about 2 minutes
    python benchmarks/bench_cuda.py --device cpu --quick     # a smoke run on the CPU (checks that it runs)

Part of ``benchmarks/device_check.sh``; the figures go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet

from unet_monai.inferers import AutocastInferer, OverlapTileInferer
from unet_monai.losses import PixelWeightedCELoss
from unet_monai.networks import PaperUNet


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in seconds, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def train_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """One AMP train step (autocast forward, pixel-weighted CE + Dice, backward, Adam) of ``net`` on ``x``, ``y``."""
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0)
    scaler = torch.amp.GradScaler(x.device.type, enabled=dtype == torch.float16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype):
            out = net(x)
        target = y[(slice(None), slice(None), *[slice(0, s) for s in out.shape[2:]])] if out.shape != y.shape else y
        loss = loss_fn(out.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small inputs and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_cuda.py: no CUDA device (torch.cuda.is_available() is False); use --device cpu")
    repeats = 2 if args.quick else args.repeats
    dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    features = (4, 8, 16, 32, 64) if args.quick else (32, 64, 128, 256, 512)
    patch = 32 if args.quick else 128
    results: dict[str, float | str] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    torch.manual_seed(0)

    # train step: 3D, batch 2, same-padding so that both networks see the same voxels
    ours = PaperUNet(3, 1, 2, features=features, padding="same", norm="batch").to(device)
    monai = BasicUNet(3, 1, 2, features=(*features, features[0])).to(device)  # the same widths, 4 poolings
    x = torch.randn(2, 1, patch, patch, patch, device=device)
    y = torch.randint(0, 2, (2, 1, patch, patch, patch), device=device)
    for name, net in (("ours", ours), ("monai", monai)):
        results[f"train_step_{name}_s"] = timed(train_step(net.train(), x, y, dtype), device, repeats)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            net.eval()
            results[f"forward_{name}_s"] = timed(lambda net=net: net(x), device, repeats)
    results["train_step_ratio"] = results["train_step_ours_s"] / results["train_step_monai_s"]  # type: ignore[operator]
    results["forward_ratio"] = results["forward_ours_s"] / results["forward_monai_s"]  # type: ignore[operator]

    # whole-volume inference: our overlap-tile inferer (margin tiling of the same net) against MONAI's sliding window
    side = 64 if args.quick else 256
    volume = torch.randn(1, 1, side, side, side // 2, device=device)
    ours.eval()
    tile_inferer = OverlapTileInferer(patch, sw_batch_size=4, margin=8, output="argmax")
    tiles = AutocastInferer(tile_inferer, dtype=str(dtype).removeprefix("torch."))

    def monai_windows() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            logits = sliding_window_inference(volume, (patch,) * 3, 4, ours, overlap=0.5, mode="gaussian")
        return logits.argmax(1, keepdim=True)

    with torch.no_grad():
        results["inference_ours_s"] = timed(lambda: tiles(volume, ours), device, max(2, repeats // 3), warmup=1)
        results["inference_monai_s"] = timed(monai_windows, device, max(2, repeats // 3), warmup=1)
        agree = (tiles(volume, ours).long() == monai_windows().long()).float().mean().item()
    results["inference_ratio"] = results["inference_ours_s"] / results["inference_monai_s"]  # type: ignore[operator]
    results["inference_label_agreement"] = agree
    if device.type == "cuda":
        results["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
