"""nnU-Net v2's plan (fingerprint extractor + ``ExperimentPlanner``, 3d_fullres) and ours (``bundles/unet/plan.json``'s
functions) side by side, on the same cases: the shared MSD spleen crop (0.79 x 0.79 x 5 mm) and the TotalSegmentator
CT (3 mm isotropic), each with its spleen label, alone and together.

The cases are laid out in nnU-Net's raw format in a temporary folder (images linked, the TotalSegmentator label
reduced to spleen = 1) with a datalist of the same files for ours. nnU-Net's axes (SimpleITK's, reversed, then
``transpose_forward``) are mapped back to the RAS axes ours uses (both files are stored RAS).

nnunetv2 is installed only in a separate environment, never in the project's::

    python3 -m venv /tmp/nnvenv
    /tmp/nnvenv/bin/pip install torch==2.13.0            # first: never a bare torch (several GB of CUDA wheels)
    /tmp/nnvenv/bin/pip install torch==2.13.0 nnunetv2   # keep the pin, or a newer torch comes with torchvision
    /tmp/nnvenv/bin/pip install -e . --no-deps
    /tmp/nnvenv/bin/pip install monai==1.6.1 pytorch-ignite fire pyyaml scipy pydicom pylibjpeg pylibjpeg-libjpeg \
        pylibjpeg-openjpeg SimpleITK nibabel tqdm pillow
    /tmp/nnvenv/bin/python benchmarks/plan_vs_nnunet.py [--budget-gb 8] [--json out.json]   # about 1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CASES = {
    "spleen2": (SHARED / "msd-spleen-ct-crop" / "sub-spleen2_ct.nii.gz",
                SHARED / "msd-spleen-ct-crop" / "sub-spleen2_ct_seg-manual.nii.gz"),
    "totalseg_ct": (SHARED / "totalsegmentator-examples" / "example_ct.nii.gz",
                    SHARED / "totalsegmentator-examples" / "example_seg_fast_force_split.nii.gz"),
}  # fmt: skip
SPLEEN = 1  # the spleen's value in both label files
DATASETS = {"msd_spleen_crop": ["spleen2"], "totalseg_ct_spleen": ["totalseg_ct"], "both": ["spleen2", "totalseg_ct"]}


def lay_out(root: Path, dataset_id: int, name: str, cases: list[str]) -> tuple[str, Path]:
    """nnU-Net raw folder ``Dataset<id>_<name>`` and a datalist of the same files; returns (nnU-Net name, datalist)."""
    nn_name = f"Dataset{dataset_id:03d}_{name}"
    raw = root / "nnUNet_raw" / nn_name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    training = []
    for case in cases:
        image, label = CASES[case]
        (raw / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(image)
        seg = nib.load(str(label))
        spleen = (np.asarray(seg.dataobj) == SPLEEN).astype(np.uint8)
        nib.save(nib.Nifti1Image(spleen, seg.affine, seg.header), str(raw / "labelsTr" / f"{case}.nii.gz"))
        training.append({"image": f"imagesTr/{case}_0000.nii.gz", "label": f"labelsTr/{case}.nii.gz", "case_id": case})
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1},
               "numTraining": len(cases), "file_ending": ".nii.gz"}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    datalist = {"name": name, "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
                "training": training}  # fmt: skip
    path = raw / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    return nn_name, path


def nnunet_plan(nn_name: str, budget_gb: float) -> dict[str, Any]:
    """nnU-Net v2's fingerprint and 3d_fullres plan (the nnUNet_* variables must be set before the import)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    DatasetFingerprintExtractor(nn_name, num_processes=1).run()
    planner = ExperimentPlanner(nn_name, gpu_memory_target_in_gb=budget_gb)
    plans = planner.plan_experiment()
    config = plans["configurations"]["3d_fullres"]
    return {"plans": plans, "config": config, "transpose_forward": plans["transpose_forward"]}


def to_ras(values: Any, transpose_forward: list[int], affine: np.ndarray) -> list:
    """Per-axis values in nnU-Net's (transposed SimpleITK) axes -> the RAS axes of a file with ``affine``."""
    itk = [None] * 3
    for i, axis in enumerate(transpose_forward):
        itk[axis] = values[i]
    stored = itk[::-1]  # SimpleITK's numpy axes are the stored axes reversed
    ornt = nib.orientations.io_orientation(affine)
    ras = [None] * 3
    for axis in range(3):
        ras[int(ornt[axis, 0])] = stored[axis]
    return ras


def compare(name: str, cases: list[str], nn: dict[str, Any], ours: dict[str, Any], budget_gb: float) -> list:
    affine = nib.load(str(CASES[cases[0]][0])).affine
    cfg, tf = nn["config"], nn["transpose_forward"]
    arch = cfg["architecture"]["arch_kwargs"]
    strides = [to_ras(s, tf, affine) for s in arch["strides"][1:]]
    kernels = [to_ras(k, tf, affine) for k in arch["kernel_sizes"]]
    stats = nn["plans"]["foreground_intensity_properties_per_channel"]["0"]
    ours_scheme = ours["schemes"][0]
    rows = [
        ("target spacing (mm, RAS)", [round(float(s), 4) for s in to_ras(cfg["spacing"], tf, affine)],
         [round(s, 4) for s in ours["target_spacing"]]),
        ("median shape after resampling", [int(s) for s in to_ras(cfg["median_image_size_in_voxels"], tf, affine)],
         ours["median_shape"]),
        ("patch size (voxels)", [int(s) for s in to_ras(cfg["patch_size"], tf, affine)],
         f"output {ours['output_patch_size']}, input {ours['input_patch_size']}"),
        ("poolings", len(strides), len(ours["pool_sizes"])),
        ("pool sizes per level", strides, ours["pool_sizes"]),
        ("kernel sizes per level", kernels, ours["kernel_sizes"]),
        ("features per level", list(arch["features_per_stage"]), ours["features"]),
        ("batch size", cfg["batch_size"], ours["batch_size"]),
        ("memory", f"nnU-Net target {budget_gb:g} GB (its calibrated estimate)",
         f"estimated {ours['estimated_memory_mb']:.0f} of {ours['memory_budget_mb']:.0f} MiB"),
        ("normalisation", f"{cfg['normalization_schemes'][0]} clip [{stats['percentile_00_5']:.1f}, "
         f"{stats['percentile_99_5']:.1f}], mean {stats['mean']:.1f}, std {stats['std']:.1f}",
         f"{ours_scheme['scheme']} clip [{ours_scheme['clip'][0]:.1f}, {ours_scheme['clip'][1]:.1f}], "
         f"mean {ours_scheme['mean']:.1f}, std {ours_scheme['std']:.1f}"),
    ]  # fmt: skip
    # the pooling rule itself, on nnU-Net's own spacing and patch (its axes): ours must give its strides and kernels
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    from unet_monai.planning import pooling_plan

    _, nn_strides, nn_kernels, _, _ = get_pool_and_conv_props(cfg["spacing"], cfg["patch_size"], 4, 999999)
    our_pools, our_kernels = pooling_plan(cfg["spacing"], cfg["patch_size"], 4)
    same = [list(p) for p in nn_strides[1:]] == our_pools and [list(k) for k in nn_kernels] == our_kernels
    rows.append(("pooling rule on nnU-Net's spacing and patch", "get_pool_and_conv_props",
                 "identical" if same else f"differs: {our_pools} {our_kernels}"))  # fmt: skip
    print(f"\n### {name} ({', '.join(cases)})\n")
    print("| | nnU-Net v2 3d_fullres | unet_monai plan.json |")
    print("| --- | --- | --- |")
    for label, theirs, mine in rows:
        print(f"| {label} | {theirs} | {mine} |")
    return [{"row": r[0], "nnunet": str(r[1]), "ours": str(r[2])} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gb", type=float, default=8.0, help="nnU-Net's VRAM target and our memory budget")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    missing = [str(p) for pair in CASES.values() for p in pair if not p.is_file()]
    if missing:
        sys.exit(f"shared data not found: {missing}")
    root = Path(tempfile.mkdtemp(prefix="plan_vs_nnunet_"))
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / sub).mkdir()
        os.environ[sub] = str(root / sub)
    import nnunetv2
    import torch

    from unet_monai.planning import fingerprint_datalist, plan

    print(f"nnunetv2 {getattr(nnunetv2, '__version__', '(version unknown)')}, torch {torch.__version__}, work {root}")
    results = {}
    for i, (name, cases) in enumerate(DATASETS.items()):
        nn_name, datalist = lay_out(root, 501 + i, name, cases)
        nn = nnunet_plan(nn_name, args.budget_gb)
        ours = plan(fingerprint_datalist(datalist, progress=False), memory_budget_mb=args.budget_gb * 1024)
        results[name] = compare(name, cases, nn, ours, args.budget_gb)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
