"""The CT pipeline across patients and spacings, through the bundle's own commands.

Two directions, each plan -> train -> evaluate on the other patient's native grid:

- ``ts_to_msd``: plan and train on the TotalSegmentator CT's spleen (3 mm isotropic; its label is model output,
  reduced to spleen = 1 by ``data_manifests/overlays/totalsegmentator_ct_spleen.json``), then segment the MSD
  spleen crop (0.8 x 0.8 x 5 mm, manual label);
- ``msd_to_ts``: the reverse.

Every step is the command a user types (``python -m monai.bundle run planning|training|evaluating``), run as a
subprocess from a scratch folder outside the repository; planning uses a CPU-sized budget
(``--memory_budget_mb 2048 --base_features 16``) and training stops at ``--time_limit_minutes`` (``TimeBudget``; with
``--final_lr_fraction`` below 1 the learning rate follows a cosine to that fraction over the epochs or the budget,
whichever ends first); ``--plan_args`` passes more planning flags (e.g. the one-case fractions). Evaluation inverts the
geometry stages (``Invertd``), so Dice and HD95 (mm) are on the test image's own grid.
``--overlay bundles/unet/ct_window.json`` lays a fixed HU window and intensity augmentation over the plan (train and
evaluate); ``--train_overlay bundles/unet/small_fov.json`` adds training-only overlays (small fields of view).
Evaluation runs for the best-validation checkpoint (``model.pt``), the last one (``last.pt``, keys ``*_last``) and,
with ``--ema_momentum``, the weight average (``model_ema.pt``, keys ``*_ema``), each without and with
``--keep_largest_component True``, and with ``--test_time_flips`` once more averaged over the flips along the axes
training flips (keys ``*_flips``), and with ``--adapt_norm`` each of those again with the BatchNorm statistics
measured on the test image (``--adapt_norm True``, keys ``*_adapted``; ``--adapt_norm_priors 0 0.5`` evaluates each
prior weight of the trained statistics, keys ``*_adapted`` for 0 and ``*_adapted_prior0.5``). ``--reuse`` skips
planning and training where the work folder already holds a direction's ``plan.json`` and ``models/last.pt`` (to
evaluate a finished run again). ``--sparse_k K`` trains on a sparse annotation, the fully automated mode of the 3D
U-Net paper: the training label (for the TotalSegmentator CT first reduced to spleen = 1 on disk) keeps K slices per
axis through the spleen (``write_sparse_datalist``), every other voxel the ignore value, and planning and training
read that datalist. ``--batch_size 1`` trains on one patch per step instead of the plan's batch (2):
every run in BENCHMARKS.md before 2026-12-06 evening did, because the one training case filled only one slot per
batch then.
Prints one row per direction with the wall times; ``--json`` writes them too::

    .venv/bin/python benchmarks/ct_across_patients.py --minutes 12 [--directions ts_to_msd msd_to_ts] \\
        [--overlay bundles/unet/ct_window.json] [--train_overlay bundles/unet/small_fov.json] [--seed 0] \\
        [--final_lr_fraction 0.02] [--ema_momentum 0.002] [--batch_size 1] [--test_time_flips] [--adapt_norm] \\
        [--adapt_norm_priors 0 0.5] [--sparse_k 4] [--work DIR [--reuse]] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from bundle_step import run_bundle_cli

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "unet"
MANIFESTS = REPO / "data_manifests"
TS = MANIFESTS / "totalsegmentator_ct_spleen.json"
TS_LABELS = MANIFESTS / "overlays" / "totalsegmentator_ct_spleen.json"
MSD = MANIFESTS / "msd_spleen_ct_crop.json"
# direction -> (training datalist, its label overlay or None, test datalist, its overlay or None, test split)
DIRECTIONS = {
    "ts_to_msd": (TS, TS_LABELS, MSD, None, "validation"),
    "msd_to_ts": (MSD, None, TS, TS_LABELS, "training"),
}


def binary_datalist(manifest: Path, out_dir: Path, value: int) -> Path:
    """``manifest`` with every label reduced on disk to ``label == value`` (uint8, the same affine and header) under
    ``out_dir``, images and labels by absolute path; returns the new datalist."""
    from unet_monai.io import load_manifest

    source = json.loads(manifest.read_text())
    written = {key: source[key] for key in ("name", "tensorImageSize", "modality", "labels")}
    written["description"] = f"{manifest.name}, every label reduced to label == {value} (binary_datalist)"
    for split in ("training", "validation"):
        items = []
        for item in load_manifest(manifest, split):
            label = nib.load(item["label"])
            path = out_dir / split / Path(item["label"]).name
            path.parent.mkdir(parents=True, exist_ok=True)
            binary = (np.asanyarray(label.dataobj) == value).astype(np.uint8)
            nib.save(nib.Nifti1Image(binary, label.affine, label.header), str(path))
            items.append({**item, "label": str(path)})
        written[split] = items
    path = out_dir / "datalist.json"
    path.write_text(json.dumps(written, indent=2) + "\n")
    return path


def sparse_training_list(name: str, root: Path, k: int) -> tuple[Path, float]:
    """The direction's training datalist with ``k`` annotated slices per axis through the spleen, every other voxel
    the ignore value (the validation split keeps its dense label), under ``root/sparse``; returns it and the annotated
    fraction of the training volume's voxels."""
    from unet_monai.data import write_sparse_datalist
    from unet_monai.io import load_manifest

    train_list, train_overlay = DIRECTIONS[name][:2]
    if train_overlay is not None:  # the 117-class TotalSegmentator map: spleen is value 1
        train_list = binary_datalist(train_list, root / "binary", value=1)
    sparse = write_sparse_datalist(train_list, root / "sparse", k)
    (item,) = load_manifest(sparse, "training")
    annotated = 1.0 - float(np.mean(np.asanyarray(nib.load(item["label"]).dataobj) == 255))
    return sparse, round(annotated, 4)


def run_direction(
    name: str,
    root: Path,
    minutes: float,
    epochs: int,
    iterations: int,
    extra: list[Path],
    train_extra: list[Path],
    plan_args: list[str],
    seed: int = 0,
    final_lr_fraction: float = 1.0,
    ema_momentum: float | None = None,
    test_time_flips: bool = False,
    adapt_norm: bool = False,
    reuse: bool = False,
    batch_size: int | None = None,
    adapt_norm_priors: tuple[float, ...] = (0.0,),
    sparse_k: int | None = None,
) -> dict[str, object]:
    """Plan (with the extra planning flags ``plan_args``), train and evaluate one direction in ``root``, with the
    overlays ``extra`` after the plan (and ``train_extra`` in training only); evaluates model.pt, last.pt and, with
    ``ema_momentum``, the weight average model_ema.pt, each with and without the largest connected component (and with
    ``test_time_flips`` each also averaged over the flips of inference.json's ``test_time_flip_axes``, and with
    ``adapt_norm`` each also with test-time BatchNorm adaptation, once per prior of ``adapt_norm_priors``); with
    ``reuse``, a direction whose plan and last checkpoint are already in ``root`` is evaluated only (its plan and
    train times are then 0); ``batch_size`` overrides the plan's patches per training step; ``sparse_k`` trains on
    ``k`` annotated slices per axis (``sparse_training_list``). Returns the row
    (times in s, ``evaluate_s`` all evaluations together; Dice, IoU, HD95 in mm)."""
    train_list, train_overlay, test_list, test_overlay, test_split = DIRECTIONS[name]
    root.mkdir(parents=True, exist_ok=True)
    plan = root / "plan.json"
    label_overlays = [train_overlay] if train_overlay else []
    annotated = 1.0
    if sparse_k:
        (train_list, annotated), label_overlays = sparse_training_list(name, root, sparse_k), []
    reused = reuse and plan.is_file() and (root / "models" / "last.pt").is_file()
    plan_s = 0.0 if reused else run_bundle_cli(
        "planning", [BUNDLE / "plan.json", *label_overlays], root, "--manifest", str(train_list),
        "--output", str(plan), "--memory_budget_mb", "2048", "--base_features", "16", *plan_args,
    )  # fmt: skip
    train_configs = [BUNDLE / "train.json", *label_overlays, plan, *extra, *train_extra]
    train_s = 0.0 if reused else run_bundle_cli(
        "training", train_configs, root, "--bundle_root", str(root),
        "--epochs", str(epochs), "--iterations_per_epoch", str(iterations), "--val_interval", str(min(5, epochs)),
        "--time_limit_minutes", str(minutes), "--seed", str(seed), "--final_lr_fraction", str(final_lr_fraction),
        *(["--ema_momentum", str(ema_momentum)] if ema_momentum else []),
        *(["--batch_size", str(batch_size)] if batch_size else []),
    )  # fmt: skip
    test_overlays = [test_overlay] if test_overlay else []
    scores: dict[str, float] = {}
    eval_s = 0.0
    # model.pt: the best validation Dice on the training patient; last.pt: the end of training; model_ema.pt: the
    # weights averaged over about the last 1 / ema_momentum iterations
    checkpoints = ("model", "last", "model_ema") if ema_momentum else ("model", "last")
    flips = (False, True) if test_time_flips else (False,)
    adapted = (None, *adapt_norm_priors) if adapt_norm else (None,)  # None: the trained statistics
    for checkpoint, largest, flipped, prior in itertools.product(checkpoints, (False, True), flips, adapted):
        eval_s += run_bundle_cli(
            "evaluating", [BUNDLE / "inference.json", BUNDLE / "evaluate.json", plan, *extra, *test_overlays], root,
            "--bundle_root", str(root), "--manifest", str(test_list), "--split", test_split,
            "--ckpt_path", str(root / "models" / f"{checkpoint}.pt"), "--keep_largest_component", str(largest),
            "--test_time_flips", str(flipped), "--adapt_norm", str(prior is not None),
            "--adapt_norm_prior", str(prior or 0.0),
        )  # fmt: skip
        with open(root / "eval" / "evaluation_per_case.csv") as f:
            row = next(csv.DictReader(f))
        suffix = (
            {"model": "", "last": "_last", "model_ema": "_ema"}[checkpoint]
            + ("_largest_component" if largest else "")
            + ("_flips" if flipped else "")
            + ("" if prior is None else "_adapted" + (f"_prior{prior:g}" if prior else ""))
        )
        scores.update(
            {k + suffix: round(float(v), 4) for k, v in row.items() if k.split("_")[0] in ("dice", "iou", "hd95")}
        )
    plan_json = json.loads(plan.read_text())
    return {
        "direction": name,
        "overlays": [p.name for p in extra],
        "train_overlays": [p.name for p in train_extra],
        "plan_args": plan_args,
        "seed": seed,
        "final_lr_fraction": final_lr_fraction,
        "ema_momentum": ema_momentum,
        "batch_size": batch_size or plan_json["batch_size"],
        "test_time_flips": test_time_flips,
        "adapt_norm": adapt_norm,
        "adapt_norm_priors": list(adapt_norm_priors) if adapt_norm else [],
        "sparse_k": sparse_k,
        "annotated": annotated,
        "reused": reused,
        "target_spacing": plan_json["plan"]["target_spacing"],
        "output_patch": plan_json["output_patch_size"],
        "plan_s": round(plan_s, 1),
        "train_s": round(train_s, 1),
        "evaluate_s": round(eval_s, 1),
        "total_s": round(plan_s + train_s + eval_s, 1),
        "scores": scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0, help="training time limit per direction")
    parser.add_argument("--epochs", type=int, default=45)
    parser.add_argument("--iterations", type=int, default=12, help="iterations per epoch")
    parser.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=list(DIRECTIONS))
    parser.add_argument("--overlay", type=Path, nargs="*", default=[], help="configs laid over the plan, e.g. "
                        "bundles/unet/ct_window.json (train and evaluate)")  # fmt: skip
    parser.add_argument("--train_overlay", type=Path, nargs="*", default=[], help="configs laid over the plan in "
                        "training only, e.g. bundles/unet/small_fov.json")  # fmt: skip
    parser.add_argument("--plan_args", default="", help="extra planning flags in one string, e.g. "
                        "--plan_args='--max_patch_fraction 1 --max_context_fraction 1'")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="training seed (runs are deterministic per seed)")
    parser.add_argument("--final_lr_fraction", type=float, default=1.0, help="learning rate at the end of training, "
                        "as a fraction of the start (cosine over the epochs or time limit; 1: constant)")  # fmt: skip
    parser.add_argument("--ema_momentum", type=float, default=None, help="average the weights over about the last "
                        "1 / EMA_MOMENTUM iterations; evaluates model_ema.pt too (keys *_ema)")  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=None, help="patches per training step (default: the "
                        "plan's)")  # fmt: skip
    parser.add_argument("--test_time_flips", action="store_true", help="also evaluate every checkpoint averaged over "
                        "the flips along the axes training flips (keys *_flips)")  # fmt: skip
    parser.add_argument("--adapt_norm", action="store_true", help="also evaluate every checkpoint with the "
                        "BatchNorm statistics measured on the test image (keys *_adapted)")  # fmt: skip
    parser.add_argument("--adapt_norm_priors", type=float, nargs="+", default=[0.0], help="with --adapt_norm, the "
                        "weights of the trained statistics to evaluate (--adapt_norm_prior; keys *_adapted for 0, "
                        "*_adapted_priorP for P)")  # fmt: skip
    parser.add_argument("--sparse_k", type=int, default=None, help="train on K annotated slices per axis of the "
                        "training label, the rest ignored (default: the dense label)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="evaluate only, where --work already holds a "
                        "direction's plan.json and models/last.pt")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ct_across_"))
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; work folder {work}")
    rows = []
    for name in args.directions:
        row = run_direction(
            name,
            work / name,
            args.minutes,
            args.epochs,
            args.iterations,
            [p.resolve() for p in args.overlay],
            [p.resolve() for p in args.train_overlay],
            shlex.split(args.plan_args),
            args.seed,
            args.final_lr_fraction,
            args.ema_momentum,
            args.test_time_flips,
            args.adapt_norm,
            args.reuse,
            args.batch_size,
            tuple(args.adapt_norm_priors),
            args.sparse_k,
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
