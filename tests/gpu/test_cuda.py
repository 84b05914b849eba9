"""The CUDA paths, for a machine with a GPU (``-m gpu``; skipped without one): an AMP train step, overlap-tile
inference (plain and with test-time BatchNorm adaptation) on the device against the same inference on the CPU,
and the bundle's training and inference commands on the GPU, single-process and under torchrun with nccl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unet_monai.inferers import AutocastInferer, BatchNormAdaptInferer, OverlapTileInferer
from unet_monai.losses import PixelWeightedCELoss
from unet_monai.networks import PaperUNet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available())"),
]
REPO = Path(__file__).resolve().parents[2]
TINY = ["--features", "[4,8,16]", "--val_output_patch_size", "[128,128]", "--output_patch_size", "[36,36]"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_amp_train_steps_lower_the_loss(dtype: torch.dtype) -> None:
    """Twenty AMP steps (GradScaler for fp16) of a valid 3D net on one batch: finite losses, the last one lower."""
    device = torch.device("cuda")
    net = PaperUNet(3, 1, 2, features=(8, 16, 32), norm="batch").to(device, memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 44, 44, 44, device=device)
    out_shape = net.output_shape((44, 44, 44))
    y = (x[(slice(None), slice(None), *[slice(net.context, net.context + s) for s in out_shape])] > 0).long()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0)
    losses = []
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            out = net(x)
        loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_overlap_tile_inference_on_the_gpu_equals_the_cpu() -> None:
    """The same valid net and volume: argmax labels on the GPU (float32) equal the CPU's but for rare ties."""
    net = PaperUNet(3, 1, 2, features=(4, 8, 16)).eval()
    volume = torch.randn(1, 1, 50, 61, 37)
    inferer = OverlapTileInferer(24, sw_batch_size=2, output="argmax")
    with torch.no_grad():
        cpu = inferer(volume, net)
        gpu = inferer(volume.cuda(), net.cuda()).cpu()
        bf16 = AutocastInferer(inferer, dtype="bfloat16")(volume.cuda(), net).cpu()
    assert gpu.shape == cpu.shape == (1, 1, 50, 61, 37)
    assert (gpu == cpu).float().mean() > 0.999
    assert (bf16 == cpu).float().mean() > 0.95


@pytest.mark.parametrize("prior", [0.0, 0.5])
def test_batch_norm_adaptation_on_the_gpu_equals_the_cpu(prior: float) -> None:
    """Test-time BatchNorm adaptation of a BatchNorm net (the measured statistics alone, and half the trained ones
    kept): the same labels on the GPU as on the CPU, and the trained statistics back on the device afterwards."""
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8, 16), norm="batch").eval()
    volume = torch.randn(1, 1, 50, 61, 37) * 2 + 1
    adapt = BatchNormAdaptInferer(OverlapTileInferer(24, sw_batch_size=2, output="argmax"), prior=prior)
    with torch.no_grad():
        cpu = adapt(volume, net)
        trained = {k: v.clone() for k, v in net.cuda().state_dict().items()}
        gpu = adapt(volume.cuda(), net).cpu()
    assert (gpu == cpu).float().mean() > 0.999
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trained.items())


def bundle(*args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        if torchrun
        else [sys.executable]
    )
    proc = subprocess.run(
        [*launcher, "-m", "monai.bundle", "run", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_bundle_trains_and_segments_on_the_gpu(tmp_path: Path) -> None:
    """The headline command with a tiny net on cuda:0, then inference with its checkpoint: labels are written."""
    epochs = ["--epochs", "2", "--iterations_per_epoch", "2", "--val_interval", "1"]
    bundle("training", "--config_file", "bundles/unet/train.json", "--bundle_root", str(tmp_path), *TINY, *epochs)
    assert (tmp_path / "models" / "model.pt").is_file()
    bundle("inference", "--config_file", "bundles/unet/inference.json", "--bundle_root", str(tmp_path), *TINY[:4])
    assert list((tmp_path / "eval").glob("*_seg.nii.gz"))


def test_torchrun_training_with_nccl(tmp_path: Path) -> None:
    """multi_gpu_train.json under torchrun picks nccl on CUDA; one process per GPU of this machine."""
    config = "['bundles/unet/train.json','bundles/unet/multi_gpu_train.json']"
    epochs = ["--epochs", "1", "--iterations_per_epoch", "2", "--val_interval", "1"]
    proc = bundle("training", "--config_file", config, "--bundle_root", str(tmp_path), *TINY, *epochs, torchrun=True)
    assert (tmp_path / "models" / "last.pt").is_file(), proc.stderr[-2000:]
