"""Every datalist in data_manifests/ points at files that exist, and real data keeps its geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from unet_monai.io import load_manifest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MANIFESTS = sorted((REPO / "data_manifests").glob("*.json"))
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_manifest_splits_load_with_existing_files(manifest):
    data = json.loads(manifest.read_text())
    splits = [k for k in ("training", "validation", "test") if k in data]
    assert splits, f"{manifest.name} has no split"
    for split in splits:
        items = load_manifest(manifest, split)
        assert len(items) == len(data[split])
        for item in items:
            assert Path(item["image"]).exists()


def test_psr_t2_and_label_stay_aligned_through_ras_and_back():
    """The spinal cord T2 is stored PSR: to RAS and back keeps image and label on one grid, voxel for voxel."""
    item = next(i for i in load_manifest(REPO / "data_manifests" / "sct_spinalcord_mr.json") if "t2/" in i["image"])
    keys = ["image", "label"]
    load = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)])
    original = load(item)
    to_ras = Orientationd(keys, axcodes="RAS")
    ras = to_ras(dict(original))
    assert np.allclose(ras["image"].affine, ras["label"].affine)
    assert ras["image"].shape == ras["label"].shape
    assert tuple(ras["image"].shape[1:]) != tuple(original["image"].shape[1:])  # PSR really was reordered
    # the cord is bright on T2 relative to its neighbourhood: its mean intensity moves with it
    inside = ras["image"][ras["label"] > 0].mean()
    np.testing.assert_allclose(inside, original["image"][original["label"] > 0].mean(), rtol=1e-6)
    back = to_ras.inverse(ras)
    for key in keys:
        torch.testing.assert_close(back[key].as_tensor(), original[key].as_tensor())
        np.testing.assert_allclose(np.asarray(back[key].affine), np.asarray(original[key].affine), atol=1e-6)
