"""The 3D U-Net paper's semi-automated experiment (Cicek et al. 2016) on real scans with manual labels.

For each volume (the MSD spleen crop, SCT cord T2 and T1), keep k = 1, 2, 4 orthogonal slices per axis of the
manual label as the annotation (``write_sparse_datalist``: evenly spaced through the label's extent), then:

- **3D**: the bundle's one command, ``python -m monai.bundle run semi_automatic`` on ``train.json`` + the plan of the
  sparse datalist (``plan.json``, CPU-sized: ``--memory_budget_mb 2048 --base_features 16``) +
  ``semi_automatic.json``: trains on the annotated voxels (the rest ignored) and writes the dense label;
- **2D**: a 2D ``PaperUNet`` of the same widths trained by ``train.json`` (``spatial_dims`` 2) on the annotated
  slices only (``write_slice_datalist``, slices of all three axes), which then segments the volume slice by slice
  along each axis (``2d axis 0|1|2``: the paper's 2D baseline), and the three softmax maps averaged
  (``2d 3 axes``, a stronger 2.5D ensemble);
- **dense**: the 3D command on the dense label (the upper bound), once per volume.

Every arm trains for the same wall-clock budget (``--minutes``, ``TimeBudget``; caching excluded) with the same
learning rate, annealed by a cosine over the budget to ``--final_lr_fraction`` of it (1: constant). Dice and IoU
are over the unannotated voxels of each k (the voxels set to the ignore value); the dense run is scored on the same
voxels. Every prediction is scored as it is and (``dice_lcc``, ``iou_lcc``) reduced to its largest connected
component, as ``--keep_largest_component True`` does; the 2D labels are kept in the work folder. Prints a JSON row
per run and a Markdown table of each::

    .venv/bin/python benchmarks/semi_automatic.py --minutes 3 [--volumes spleen sct_t2 sct_t1] [--ks 1 2 4] \
        [--final_lr_fraction 0.02] [--seed 0] [--train_args='--elastic_sigma [10,10,0]'] \
        [--train_args_2d='--rotate_range 0.52'] [--overlay bundles/unet/nnunet_augment.json] \
        [--plan_args='--max_patch_fraction 0.75'] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from bundle_step import run_bundle_cli

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "unet"
MANIFESTS = REPO / "data_manifests"
VOLUMES = {
    "spleen": MANIFESTS / "msd_spleen_ct_crop.json",
    "sct_t2": MANIFESTS / "sct_spinalcord_t2.json",
    "sct_t1": MANIFESTS / "sct_spinalcord_t1.json",
}
# the 2D arm trains by train.json alone with the semi-automated overlay's epochs (the budget ends training)
SEMI = json.loads((BUNDLE / "semi_automatic.json").read_text())
TWO_D = ["2d axis 0", "2d axis 1", "2d axis 2", "2d 3 axes"]  # slice by slice along one axis; the 3 maps averaged


def largest_component(prediction: np.ndarray) -> np.ndarray:
    """The foreground's largest connected component (MONAI's ``KeepLargestConnectedComponent``, the transform behind
    ``--keep_largest_component True``)."""
    from monai.transforms import KeepLargestConnectedComponent

    kept = KeepLargestConnectedComponent(applied_labels=[1], independent=True)(prediction[None].astype(np.uint8))
    return np.asarray(kept)[0]


def scores(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Foreground Dice and IoU of two binary maps over the voxels of ``mask``, as they are and (``*_lcc``) with the
    prediction reduced to its largest connected component."""
    result = {}
    for suffix, label in (("", prediction > 0), ("_lcc", largest_component(prediction > 0) > 0)):
        p, t = label[mask], truth[mask] > 0
        overlap, total, union = np.sum(p & t), np.sum(p) + np.sum(t), np.sum(p | t)
        result["dice" + suffix] = round(float(2 * overlap / total), 4) if total else 1.0
        result["iou" + suffix] = round(float(overlap / union), 4) if union else 1.0
    return result


@dataclass(frozen=True)
class Budget:
    """What every arm shares: wall-clock minutes of training, the final learning rate as a fraction of the first
    (cosine), the seed, configs laid over train.json and extra planning flags."""

    minutes: float
    final_lr: float
    seed: int = 0
    overlays: list[Path] = field(default_factory=list)
    plan_args: list[str] = field(default_factory=list)


def plan_datalist(datalist: Path, plan: Path, budget: Budget) -> float:
    """Plan ``datalist`` into ``plan`` CPU-sized (2 GiB, 16 base features, plus the budget's ``plan_args``); returns
    the time (s)."""
    return run_bundle_cli(
        "planning", [BUNDLE / "plan.json"], plan.parent, "--manifest", str(datalist), "--output", str(plan),
        "--memory_budget_mb", "2048", "--base_features", "16", *budget.plan_args,
    )  # fmt: skip


def run_3d(
    datalist: Path, root: Path, budget: Budget, train_args: list[str] | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Plan ``datalist``, then the bundle's ``run semi_automatic`` (with the budget's overlays after the plan and the
    extra overrides ``train_args``); returns the dense label and the times (s)."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / "times.json"  # a finished run (same --work folder): reused, not rerun
    if done.is_file():
        (written,) = sorted((root / "eval").glob("*_dense.nii*"))
        return np.asanyarray(nib.load(str(written)).dataobj), json.loads(done.read_text())
    plan = root / "plan.json"
    times = {"plan_s": plan_datalist(datalist, plan, budget)}
    times["run_s"] = run_bundle_cli(
        "semi_automatic", [BUNDLE / "train.json", plan, *budget.overlays, BUNDLE / "semi_automatic.json"], root,
        "--manifest", str(datalist), "--bundle_root", str(root), "--time_limit_minutes", str(budget.minutes),
        "--final_lr_fraction", str(budget.final_lr), "--seed", str(budget.seed), *(train_args or []),
    )  # fmt: skip
    (written,) = sorted((root / "eval").glob("*_dense.nii*"))
    done.write_text(json.dumps(times))
    return np.asanyarray(nib.load(str(written)).dataobj), times


def overrides(args: list[str]) -> dict[str, object]:
    """``["--key", "value", ...]`` as config ids and values (JSON where it parses, else the string)."""
    if len(args) % 2 or not all(key.startswith("--") for key in args[::2]):
        raise ValueError(f"overrides must be pairs of --key value, got {args}.")

    def value(text: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    return {key[2:]: value(text) for key, text in zip(args[::2], args[1::2])}


def run_2d(
    sparse: Path, image_path: str, plan: Path, root: Path, budget: Budget, train_args: list[str] | None = None
) -> tuple[list[np.ndarray], dict]:
    """Train a 2D net on the annotated slices of ``sparse`` (with the budget's overlays on train.json and the extra
    overrides ``train_args``), then segment the volume slice by slice along each axis; returns the labels along axis
    0, 1 and 2 and the one of the three softmax maps averaged (also written to ``root/labels_<net>.nii.gz``), and the
    times (s)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor
    from monai.transforms import Compose

    from unet_monai.data import write_slice_datalist

    root.mkdir(parents=True, exist_ok=True)
    slices = write_slice_datalist(sparse, root / "slices")
    planned = json.loads(plan.read_text())
    features = planned["features"]
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "train.json"), *map(str, budget.overlays)])
    parser.update({
        "bundle_root": str(root), "manifest": str(slices), "spatial_dims": 2, "features": features,
        "norm": "batch", "pool_sizes": None, "kernel_sizes": None, "output_patch_size": [96, 96],
        "val_output_patch_size": [256, 256], "batch_size": 4, "border_w0": 0.0, "border_class_weights": None,
        "pos_fraction": 0.33, "epochs": SEMI["epochs"], "iterations_per_epoch": SEMI["iterations_per_epoch"],
        "val_interval": 10**9,
        "time_limit_minutes": budget.minutes, "final_lr_fraction": budget.final_lr, "seed": budget.seed,
        "stages::intensity": planned["stages::intensity"],
        "validate::dataset::data": "$unet_monai.io.load_manifest(@manifest, 'training')[:1]",  # never run
        **overrides(train_args or []),
    })  # fmt: skip
    parser.parse()
    start = time.perf_counter()
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("training")
    train_s = time.perf_counter() - start
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("tile_inferer")
    intensity = Compose(parser.get_parsed_content("stages::intensity"))
    volume = nib.load(image_path)
    data = volume.get_fdata(dtype=np.float32)
    start = time.perf_counter()
    per_axis = [np.zeros(data.shape, dtype=np.float32) for _ in range(3)]
    with torch.no_grad():
        for axis, probabilities in enumerate(per_axis):
            for index in range(data.shape[axis]):
                image = MetaTensor(np.take(data, index, axis=axis)[None])
                image = intensity({"image": image})["image"].as_tensor()[None]
                logits = inferer(image.to(memory_format=torch.channels_last), network)
                foreground = torch.softmax(logits.float(), dim=1)[0, 1].numpy()
                target: list[slice | int] = [slice(None)] * 3
                target[axis] = index
                probabilities[tuple(target)] = foreground
    labels = [(p > 0.5).astype(np.uint8) for p in [*per_axis, sum(per_axis) / 3]]
    for net, label in zip(TWO_D, labels):
        nib.save(nib.Nifti1Image(label, volume.affine), str(root / f"labels_{net.replace(' ', '_')}.nii.gz"))
    return labels, {"run_s": train_s, "segment_s": time.perf_counter() - start}


def main() -> None:
    from unet_monai.data import write_sparse_datalist
    from unet_monai.io import load_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of every run (wall clock)")
    parser.add_argument("--volumes", nargs="+", default=list(VOLUMES), choices=list(VOLUMES))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--arms", nargs="+", default=["dense", "3d", "2d"], choices=["dense", "3d", "2d"])
    parser.add_argument("--final_lr_fraction", type=float, default=0.02, help="learning rate at the end of the "
                        "budget, as a fraction of the start (cosine; 1: constant)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="training seed of every run (deterministic per seed)")
    parser.add_argument("--train_args", default="", help="extra overrides of the 3D and dense runs in one string, "
                        "e.g. --train_args='--elastic_sigma [10,10,0]'")  # fmt: skip
    parser.add_argument("--overlay", type=Path, nargs="*", default=[], help="configs laid over train.json in every "
                        "run, e.g. bundles/unet/nnunet_augment.json")  # fmt: skip
    parser.add_argument("--plan_args", default="", help="extra planning flags in one string, e.g. "
                        "--plan_args='--max_patch_fraction 0.75'")  # fmt: skip
    parser.add_argument("--train_args_2d", default="", help="extra overrides of the 2D runs in one string, "
                        "e.g. --train_args_2d='--rotate_range 0.52'")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="semi_automatic_"))
    train_args = shlex.split(args.train_args)
    budget = Budget(
        args.minutes,
        args.final_lr_fraction,
        args.seed,
        [p.resolve() for p in args.overlay],
        shlex.split(args.plan_args),
    )
    print(f"work folder {work}; torch threads {torch.get_num_threads()}", flush=True)
    rows: list[dict] = []

    def report(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")

    for volume, manifest in VOLUMES.items():
        if volume not in args.volumes:
            continue
        (item,) = load_manifest(manifest, "training")
        truth = np.asanyarray(nib.load(item["label"]).dataobj)
        masks = {}
        for k in args.ks:
            sparse = write_sparse_datalist(manifest, work / volume / f"k{k}", k)
            (sparse_item,) = load_manifest(sparse, "training")
            masks[k] = np.asanyarray(nib.load(sparse_item["label"]).dataobj) == 255
            annotated = round(float(1 - masks[k].mean()), 4)
            if "3d" in args.arms:
                prediction, times = run_3d(sparse, work / volume / f"k{k}" / "3d", budget, train_args)
                report({"volume": volume, "k": k, "net": "3d", "seed": args.seed, "annotated": annotated, **times,
                        **scores(prediction, truth, masks[k])})  # fmt: skip
            if "2d" in args.arms:
                plan = work / volume / f"k{k}" / "3d" / "plan.json"
                if not plan.exists():
                    plan.parent.mkdir(parents=True, exist_ok=True)
                    plan_datalist(sparse, plan, budget)
                labels, times = run_2d(
                    sparse, item["image"], plan, work / volume / f"k{k}" / "2d", budget, shlex.split(args.train_args_2d)
                )
                for net, prediction in zip(TWO_D, labels):
                    report({"volume": volume, "k": k, "net": net, "seed": args.seed, "annotated": annotated, **times,
                            **scores(prediction, truth, masks[k])})  # fmt: skip
        if "dense" in args.arms:
            prediction, times = run_3d(manifest, work / volume / "dense", budget, train_args)
            for k, mask in masks.items():
                report({"volume": volume, "k": k, "net": "3d dense", "seed": args.seed, "annotated": 1.0, **times,
                        **scores(prediction, truth, mask)})  # fmt: skip

    nets = [*TWO_D, "3d", "3d dense"]
    for suffix, title in (("", "as predicted"), ("_lcc", "largest connected component")):
        print(f"\n{title}\n\n| volume | k | annotated voxels | " + " | ".join(f"{n} Dice / IoU" for n in nets) + " |")
        print("|---" * (3 + len(nets)) + "|")
        for volume in args.volumes:
            for k in args.ks:
                here = [r for r in rows if r["volume"] == volume and r["k"] == k]
                cells = {r["net"]: f"{r['dice' + suffix]:.3f} / {r['iou' + suffix]:.3f}" for r in here}
                share = next((r["annotated"] for r in here if r["net"] != "3d dense"), "")
                print(f"| {volume} | {k} | {share} | " + " | ".join(cells.get(net, "") for net in nets) + " |")


if __name__ == "__main__":
    main()
