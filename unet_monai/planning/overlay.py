"""A plan as a bundle overlay: the JSON that ``--config_file "['bundles/unet/train.json','plans/X.json']"`` lays
over ``train.json`` (or ``inference.json``), setting the preprocessing stages and the network's ids."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unet_monai.io.atomic import atomic_path

__all__ = ["overlay_config", "write_overlay", "OVERLAY_IDS"]

logger = logging.getLogger(__name__)

# the ids of train.json an overlay sets (besides "plan", a block nothing references)
OVERLAY_IDS = (
    "spatial_dims",
    "in_channels",
    "num_classes",
    "features",
    "padding",
    "pool_sizes",
    "kernel_sizes",
    "norm",
    "output_patch_size",
    "val_output_patch_size",
    "batch_size",
    "manifest",
    "stages::orientation",
    "stages::spacing",
    "stages::intensity",
    "pos_fraction",
    "border_w0",
    "border_class_weights",
    "elastic_sigma",
)
PAPER_ELASTIC_SIGMA_VOXELS = 10.0  # the paper's displacement (10 pixels), along the finest axis


def elastic_sigma(spacing: list[float]) -> list[float]:
    """The elastic displacement per axis in voxels: the paper's 10 voxels along the finest axis, the same distance in
    mm along the others (a 5 mm axis next to 0.8 mm ones moves 1.6 voxels, not 10, i.e. 8 mm instead of 50 mm)."""
    finest = min(spacing)
    return [round(PAPER_ELASTIC_SIGMA_VOXELS * finest / s, 2) for s in spacing]


# nnU-Net's foreground oversampling (a third of the patches centred on a class voxel); the paper's border weight
# map separates touching cells in 2D EM, not organs, so a plan switches it off
PLANNED_SAMPLING = {"pos_fraction": 0.33, "border_w0": 0.0, "border_class_weights": None}


def overlay_config(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The overlay dict of a :func:`unet_monai.planning.plan` result.

    The stages work in ``train.json`` (``keys`` ``["image", "label"]``) and ``inference.json`` (``["image"]``):
    ``Orientationd`` to RAS, ``Spacingd`` to the target spacing (mm, RAS axes) with ``bilinear`` for the image and
    ``nearest`` for the label (one mode per key: ``['bilinear', 'nearest'][:len(@spatial_keys)]``), then
    :class:`unet_monai.transforms.NormalizeByModalityd` with one scheme per channel. Training then centres a third
    of its patches on foreground (``pos_fraction`` 0.33, as nnU-Net), drops the 2D EM border weight map, and deforms
    by the same distance in mm along every axis (:func:`elastic_sigma`).
    """
    config: dict[str, Any] = {
        "spatial_dims": int(plan["spatial_dims"]),
        "in_channels": int(plan["in_channels"]),
        "num_classes": int(plan["num_classes"]),
        "features": [int(f) for f in plan["features"]],
        "padding": "valid",
        "pool_sizes": [[int(p) for p in entry] for entry in plan["pool_sizes"]],
        "kernel_sizes": [[int(k) for k in entry] for entry in plan["kernel_sizes"]],
        "norm": plan["norm"],
        "output_patch_size": [int(s) for s in plan["output_patch_size"]],
        "val_output_patch_size": [int(s) for s in plan["val_output_patch_size"]],
        "batch_size": int(plan["batch_size"]),
        "manifest": str(Path(plan["manifest"]).resolve()),
        "stages::orientation": [
            {"_target_": "Orientationd", "keys": "@spatial_keys", "axcodes": "RAS"[: int(plan["spatial_dims"])]}
        ],
        "stages::spacing": [
            {
                "_target_": "Spacingd",
                "keys": "@spatial_keys",
                "pixdim": [float(s) for s in plan["target_spacing"]],
                "mode": "$['bilinear', 'nearest'][:len(@spatial_keys)]",
            }
        ],
        "stages::intensity": [
            {
                "_target_": "unet_monai.transforms.NormalizeByModalityd",
                "keys": "image",
                "schemes": list(plan["schemes"]),
            }
        ],
        **PLANNED_SAMPLING,
        "elastic_sigma": elastic_sigma([float(s) for s in plan["target_spacing"]]),
    }
    if plan.get("data_root"):
        config["data_root"] = str(plan["data_root"])
    config["plan"] = {
        k: plan[k]
        for k in (
            "class_names",
            "target_spacing",
            "median_shape",
            "input_patch_size",
            "context",
            "estimated_memory_mb",
            "memory_budget_mb",
            "reasons",
            "fingerprint",
        )
        if k in plan
    }
    return config


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def _dumps(config: Mapping[str, Any]) -> str:
    """JSON with 4-space indents and each list of numbers on one line (``[2, 2, 1]``)."""
    text = json.dumps(config, indent=4)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def write_overlay(plan: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`overlay_config` of ``plan`` to ``path`` (JSON, atomically, parent folders created) and log the
    plan at INFO. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = overlay_config(plan)
    with atomic_path(path) as tmp:
        tmp.write_text(_dumps(config) + "\n", encoding="utf-8")
    logger.info(
        "plan for %s: target spacing %s mm, output patch %s (input %s), pool sizes %s, kernel sizes %s, features %s, "
        "batch size %d (estimated %.0f of %.0f MiB), normalisation %s; overlay written to %s",
        plan["manifest"],
        [round(s, 4) for s in plan["target_spacing"]],
        plan["output_patch_size"],
        plan.get("input_patch_size"),
        plan["pool_sizes"],
        plan["kernel_sizes"],
        plan["features"],
        plan["batch_size"],
        plan.get("estimated_memory_mb", float("nan")),
        plan.get("memory_budget_mb", float("nan")),
        [s["scheme"] for s in plan["schemes"]],
        path,
    )
    for reason in plan.get("reasons", []):
        logger.info("plan: %s", reason)
    return path
