"""Whole-volume inference: ours against MONAI's sliding_window_inference, speed, quality and peak memory.

One 3D volume (synthetic EM tissue, 256 x 256 x 128 as in the issue) and one network (a same-padding PaperUNet
32..256 with BatchNorm and three poolings, briefly trained on the synthetic set so that its labels mean something),
in one run:

- MONAI ``sliding_window_inference``: roi 96^3, Gaussian blending, overlap 0.25 and 0.5, sw_batch_size 1
  and 4, fp32 (its defaults), then argmax;
- ours: ``OverlapTileInferer`` with windows of 64^3 to 128^3 of which the centre is kept (``margin`` 8 or 16),
  argmax per tile (``output="argmax"``), bf16 autocast + channels-last through ``AutocastInferer`` where the
  CPU has bf16, and once in fp32;
- the network computes its full-resolution levels in slabs (``PaperUNet.inference_slabs``, the default) in
  every case, MONAI's included; the cases ending in ``_whole`` compute whole maps instead, as before slabs;
- memory growth, the bundle's ``memory_mapped.json`` path: a small valid PaperUNet on an uncompressed NIfTI of
  N and 8N voxels loaded by ``LoadMemmapNiftid`` (the voxels stay in the file), batched by ``view_collate``,
  tiles z-scored as they are read (``normalize=True``), argmax into an unnamed memory-mapped file
  (``memmap_dir``); the same through the in-RAM path; and the whole bundle command on the same files
  (``python -m monai.bundle run inference`` with ``memory_mapped.json``: loading, checks, inference and the
  NIfTI written).

Each case runs in its own process, so that its peak RSS (``VmHWM``) is its own; the RSS just before inference
(imports, network, volume: the same in every case) is printed too. Prints voxels per
second, peak RSS, ratios, and the Dice of our labels against MONAI's (overlap 0.5, sw 4).

    python benchmarks/bench_inference.py            # about 20 minutes on 2 cores
    python benchmarks/bench_inference.py --quick    # small volume: checks that it runs
    python benchmarks/bench_inference.py --growth-only   # the memory growth cases alone, about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from unet_monai.data import make_synthetic_em, synthetic_em_volume
from unet_monai.inferers import AutocastInferer, OverlapTileInferer, fastest_autocast_dtype
from unet_monai.networks import PaperUNet

FEATURES = (32, 64, 128, 256)
ROI = 96
GROWTH_FEATURES = (4, 8, 16)
REPO = Path(__file__).resolve().parents[1]


def make_network() -> PaperUNet:
    return PaperUNet(3, 1, 2, features=FEATURES, padding="same", norm="batch")


def train_briefly(work: Path, shape: tuple[int, ...], steps: int) -> None:
    """A few Adam steps on synthetic patches, so that the benchmark compares meaningful labels."""
    torch.manual_seed(0)
    net = make_network()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    image, label = synthetic_em_volume(shape, seed=1)
    image = (image - image.mean()) / image.std()
    rng = np.random.default_rng(0)
    patch = 48
    for _ in range(steps):
        corner = [int(rng.integers(0, s - patch + 1)) for s in shape]
        region = tuple(slice(c, c + patch) for c in corner)
        x = torch.from_numpy(image[region])[None, None]
        y = torch.from_numpy(label[region].astype(np.int64))[None]
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
        loss_fn(out.float(), y).backward()
        optimizer.step()
    torch.save(net.state_dict(), work / "net.pt")


def run_case(case: str, work: Path) -> dict:
    """One measurement, in this (fresh) process."""
    torch.manual_seed(0)
    if case.startswith("growth"):
        return run_growth(case, work)
    if case.startswith("bundle"):
        return run_bundle_growth(case, work)
    name = case
    volume = np.load(work / "volume.npy")
    x = torch.from_numpy(volume)[None, None]
    net = make_network()
    net.load_state_dict(torch.load(work / "net.pt", weights_only=True))
    net.eval()
    if case.endswith("_whole"):  # the network's whole-map forward pass (no slabs), as in earlier sessions
        net.inference_slabs = 0
        case = case.removesuffix("_whole")
    before = rss_mb()  # imports, network and volume: what every case holds before inference starts
    start = time.perf_counter()
    with torch.no_grad():
        if case.startswith("monai"):
            from monai.inferers import sliding_window_inference

            _, overlap, sw = case.split("_")
            logits = sliding_window_inference(x, (ROI,) * 3, int(sw), net, overlap=float(overlap), mode="gaussian")
            labels = logits.argmax(1, keepdim=True).to(torch.uint8)
        else:  # ours_<window>_<margin>_<sw batch>_<precision>
            _, roi, margin, sw, precision = case.split("_")
            dtype = fastest_autocast_dtype("cpu") if precision == "auto" else "float32"
            net = net.to(memory_format=torch.channels_last_3d)
            tiles = OverlapTileInferer(int(roi), sw_batch_size=int(sw), margin=int(margin), output="argmax")
            labels = AutocastInferer(tiles, dtype=dtype)(x, net)
    seconds = time.perf_counter() - start
    np.save(work / f"{name}.npy", labels.numpy())
    peak = peak_rss_mb()
    return {"seconds": seconds, "voxels": int(np.prod(volume.shape)), "peak_rss_mb": peak, "rss_before_mb": before}


def run_bundle_growth(case: str, work: Path) -> dict:
    """The whole bundle command with ``memory_mapped.json`` (loading, checks, inference, the NIfTI written) on the
    N or 8N file, in this process: ``python -m monai.bundle run inference`` with the 3D overlay."""
    from monai.bundle import run

    factor = case.split("_")[1]
    run(
        "inference",
        config_file=[str(REPO / "bundles/unet" / f) for f in ("inference.json", "train_3d.json", "memory_mapped.json")],
        bundle_root=str(work / "bundle"),
        dataset_dir=str(work / "bundle" / "data"),
        features=list(GROWTH_FEATURES),
        val_output_patch_size=[32, 32, 32],
        input=str(work / f"growth_{factor}.nii"),
        output_dir=str(work / f"bundle_out_{factor}"),
    )
    return {"peak_rss_mb": peak_rss_mb()}


def run_growth(case: str, work: Path) -> dict:
    """The bundle's memory-mapped path on a small valid net: peak RSS for N (case growth_1) or 8N (growth_8)."""
    from monai.transforms import EnsureChannelFirstd

    from unet_monai.io import LoadMemmapNiftid, view_collate

    mapped, factor = case.split("_")  # growth_<factor>: memory-mapped; growthram_<factor>: the in-RAM path
    path = str(work / f"growth_{factor}.nii")
    net = PaperUNet(3, 1, 2, features=GROWTH_FEATURES).eval()
    if mapped == "growth":
        image = view_collate([EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": path}))])["image"]
        inferer = OverlapTileInferer(32, sw_batch_size=2, output="argmax", normalize=True, memmap_dir=str(work))
    else:
        from monai.transforms import LoadImaged, NormalizeIntensityd

        loaded = NormalizeIntensityd("image")(EnsureChannelFirstd("image")(LoadImaged("image")({"image": path})))
        image = loaded["image"][None]
        inferer = OverlapTileInferer(32, sw_batch_size=2, output="argmax")
    start = time.perf_counter()
    with torch.no_grad():
        labels = inferer(image, net)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "voxels": int(labels[0, 0].numel()), "peak_rss_mb": peak_rss_mb()}


def rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB; 0 where /proc is missing."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` of its own address space. (``ru_maxrss`` would not do: on
    Linux it keeps the parent's high-water mark across fork and exec, a floor under every child's figure.)"""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: kilobytes on Linux, bytes on macOS


def spawn(case: str, work: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", case, "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,  # the bundle's configs refer to each other by paths from the repository root
    )
    if proc.returncode:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a == 1, b == 1
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small volume, fewer cases (a smoke run)")
    parser.add_argument("--growth-only", action="store_true", help="only the memory growth cases (N and 8N)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.work)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        if not args.growth_only:
            compare_with_monai(Path(tmp), args.quick)
        memory_growth(Path(tmp), args.quick)


def compare_with_monai(work: Path, quick: bool) -> None:
    """Speed, peak RSS and Dice of ours against MONAI's sliding window on one volume and network."""
    shape = (96, 96, 96) if quick else (256, 256, 128)
    image, _ = synthetic_em_volume(shape, seed=7)
    np.save(work / "volume.npy", ((image - image.mean()) / image.std()).astype(np.float32))
    train_briefly(work, (96, 96, 64), steps=5 if quick else 60)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; volume {shape}, roi {ROI}^3, "
        f"same-padding PaperUNet {FEATURES}"
    )
    monai_cases = ["monai_0.5_4"] if quick else ["monai_0.25_1", "monai_0.25_4", "monai_0.5_1", "monai_0.5_4"]
    monai_cases += [] if quick else ["monai_0.5_1_whole"]
    our_cases = ["ours_96_16_1_auto", "ours_64_8_1_auto"]
    our_cases += [] if quick else ["ours_80_8_1_auto", "ours_128_16_1_auto", "ours_128_16_2_auto"]
    our_cases += [] if quick else ["ours_128_16_1_fp32", "ours_96_16_1_auto_whole", "ours_64_8_1_auto_whole"]
    results = {case: spawn(case, work) for case in monai_cases + our_cases}
    reference = np.load(work / "monai_0.5_4.npy")
    print(
        "\nours_<window>_<margin>_<sw batch>_<precision>: windows of that size, the centre kept (margin voxels off"
        " each side); monai_<overlap>_<sw batch>; _whole: the network computes whole maps (inference_slabs 0)"
        " instead of its full-resolution levels in slabs"
    )
    print(
        f"{'case':<22} {'s':>6} {'Mvoxel/s':>9} {'peak RSS MB':>12} {'RSS before MB':>14} {'added MB':>9} "
        f"{'Dice vs MONAI 0.5/4':>20}"
    )
    for case, r in results.items():
        rate = r["voxels"] / r["seconds"] / 1e6
        agreement = dice(np.load(work / f"{case}.npy"), reference)
        added = r["peak_rss_mb"] - r["rss_before_mb"]
        print(
            f"{case:<22} {r['seconds']:6.1f} {rate:9.3f} {r['peak_rss_mb']:12.0f} {r['rss_before_mb']:14.0f} "
            f"{added:9.0f} {agreement:20.4f}"
        )
    print(
        "\nratios, ours against MONAI (speed: MONAI seconds / our seconds; RSS: our peak / MONAI peak; added: the"
        " same for the memory added by inference, peak minus the RSS before it)"
    )
    for mine in our_cases:
        # the same network pass on both sides: slabbed against slabbed, whole maps against whole maps
        for theirs in [c for c in monai_cases if c.endswith("_whole") == mine.endswith("_whole")]:
            speed = results[theirs]["seconds"] / results[mine]["seconds"]
            rss = results[mine]["peak_rss_mb"] / results[theirs]["peak_rss_mb"]
            mine_added = results[mine]["peak_rss_mb"] - results[mine]["rss_before_mb"]
            added = mine_added / (results[theirs]["peak_rss_mb"] - results[theirs]["rss_before_mb"])
            print(f"  {mine:<20} vs {theirs:<14} {speed:5.1f}x faster   RSS {rss:4.2f}x   added {added:4.2f}x")
    print("goals: >= 3x MONAI's throughput at overlap 0.5, Dice >= 0.995 against it, peak RSS <= 0.5x")


def memory_growth(work: Path, quick: bool) -> None:
    """Peak RSS for N and 8N voxels: the inferer on a memory-mapped file, the in-RAM path, and the bundle command."""
    base = (64, 64, 32) if quick else (128, 128, 128)
    for factor, size in ((1, base), (8, tuple(2 * s for s in base))):
        voxels = np.random.default_rng(0).standard_normal(size, dtype=np.float32) * 100 + 40
        nib.save(nib.Nifti1Image(voxels, np.eye(4)), work / f"growth_{factor}.nii")
        del voxels
    make_synthetic_em(work / "bundle" / "data", spatial_dims=3)  # the bundle's label names; written once
    (work / "bundle" / "models").mkdir(parents=True)
    bundle_net = PaperUNet(3, 1, 2, features=GROWTH_FEATURES, norm="batch")  # train_3d.json's network
    torch.save(bundle_net.state_dict(), work / "bundle" / "models" / "model.pt")
    print(f"\nmemory growth, valid PaperUNet {GROWTH_FEATURES}, argmax; {base} (N) and 8N voxels:")
    kinds = [
        ("growth", "memory-mapped NIfTI in, labels to a mapped file"),
        ("growthram", "in RAM"),
        ("bundle", "bundle command, memory_mapped.json, NIfTI out"),
    ]
    for kind, label in kinds:
        small, large = spawn(f"{kind}_1", work), spawn(f"{kind}_8", work)
        print(
            f"  {label:<48} N -> {small['peak_rss_mb']:.0f} MB, 8N -> {large['peak_rss_mb']:.0f} MB: "
            f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x" + (" (goal < 1.3x)" if kind != "growthram" else "")
        )


if __name__ == "__main__":
    main()
