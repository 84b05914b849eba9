"""Preprocessing throughput on the TotalSegmentator CT: ours against MONAI's own chain and nnU-Net v2's preprocessor.

One volume (``example_ct.nii.gz``, 122 x 101 x 112 at 3 mm, with its spleen label), three pipelines, each from the
files on disk to the normalised image and the label on the target grid, timed in the same run:

- **ours**: ``train.json``'s ``load_transforms`` (load, check, labels, orientation, spacing, intensity) under the
  overlay our planner writes for this datalist, with the target spacing set below;
- **MONAI**: ``LoadImaged`` + ``EnsureChannelFirstd`` + ``Orientationd`` (RAS) + ``Spacingd`` (bilinear image,
  nearest label) + ``NormalizeIntensityd``, the chain of the model-zoo bundles;
- **nnU-Net v2**: ``DefaultPreprocessor.run_case`` with nnU-Net's own 3d_fullres plan of the same case (fingerprint
  and ``ExperimentPlanner``), its spacing set to the same target: read, transpose, crop to non-zero, CT
  normalisation, resampling (third-order spline for the image, as nnU-Net does).

Throughput is output voxels per second (median of ``--repeats`` runs after one warm-up). Targets: 1.5 mm isotropic
(8x the voxels) and the plan's own 3 mm. Run in the nnU-Net benchmark environment (see ``plan_vs_nnunet.py``)::

    /tmp/nnvenv/bin/python benchmarks/bench_preprocess.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from plan_vs_nnunet import lay_out, nnunet_plan
from timing import timed

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "unet"
TARGETS = {"1.5 mm isotropic": [1.5, 1.5, 1.5], "3 mm (the plan)": [3.0, 3.0, 3.0]}


def ours(datalist: Path, item: dict, spacing: list[float]):
    """Our preprocessing stages as ``train.json`` composes them, under our plan with ``spacing``."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from unet_monai.planning import fingerprint_datalist, plan, write_overlay

    overlay = write_overlay(plan(fingerprint_datalist(datalist, progress=False)), datalist.parent / "ours.json")
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "train.json"), str(overlay)])
    parser["stages::spacing"][0]["pixdim"] = spacing
    transform = Compose(parser.get_parsed_content("load_transforms"))
    return lambda: transform(dict(item))


def monai_chain(item: dict, spacing: list[float]):
    """MONAI's own chain of the zoo bundles."""
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Spacingd,
    )

    keys = ["image", "label"]
    transform = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=spacing, mode=["bilinear", "nearest"]), NormalizeIntensityd("image"),
    ])  # fmt: skip
    return lambda: transform(dict(item))


def nnunet(nn_name: str, raw: Path, spacing: list[float]):
    """nnU-Net v2's ``DefaultPreprocessor.run_case`` under its own plan with ``spacing``."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = nnunet_plan(nn_name, 8.0)["plans"]
    plans["configurations"]["3d_fullres"]["spacing"] = spacing  # isotropic: the axis order does not matter
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    dataset = json.loads((raw / "dataset.json").read_text())
    images, seg = [str(raw / "imagesTr" / "totalseg_ct_0000.nii.gz")], str(raw / "labelsTr" / "totalseg_ct.nii.gz")
    preprocessor = DefaultPreprocessor(verbose=False)
    return lambda: preprocessor.run_case(images, seg, manager, config, dataset)


def voxels(result) -> int:
    """Spatial voxels of the preprocessed image, whichever pipeline returned it."""
    image = result[0] if isinstance(result, tuple) else result["image"]
    return int(np.prod(image.shape[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / sub).mkdir()
        os.environ[sub] = str(root / sub)
    nn_name, datalist = lay_out(root, 601, "totalseg_ct_spleen", ["totalseg_ct"])
    raw = datalist.parent
    item = {
        "image": str(raw / "imagesTr" / "totalseg_ct_0000.nii.gz"),
        "label": str(raw / "labelsTr" / "totalseg_ct.nii.gz"),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; work {root}")
    rows = []
    for target, spacing in TARGETS.items():
        pipelines = {"ours": ours(datalist, item, spacing), "MONAI chain": monai_chain(item, spacing),
                     "nnU-Net v2": nnunet(nn_name, raw, spacing)}  # fmt: skip
        seconds = {name: timed(fn, args.repeats, warmup=1) for name, fn in pipelines.items()}
        out_voxels = {name: voxels(fn()) for name, fn in pipelines.items()}
        print(f"\n### to {target}\n")
        print("| pipeline | output voxels | s | Mvoxels/s | its time / ours |\n|---|---|---|---|---|")
        for name in pipelines:
            rate = out_voxels[name] / seconds[name] / 1e6
            ratio = seconds[name] / seconds["ours"]
            print(f"| {name} | {out_voxels[name]:,} | {seconds[name]:.3f} | {rate:.2f} | {ratio:.2f}x |")
            rows.append({"target": target, "pipeline": name, "voxels": out_voxels[name], "seconds": seconds[name]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
