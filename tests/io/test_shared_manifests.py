"""Every datalist in data_manifests/ points at files that exist and names every label value of its label files (the
TotalSegmentator ones with the label files' own class tables), and real data keeps its geometry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, Orientationd

from unet_monai.io import check_label_values, load_manifest, manifest_class_names, manifest_labels

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
MANIFESTS = sorted((REPO / "data_manifests").glob("*.json"))
# datalists whose label files hold values their labels do not name: the deprecated five-organ one, and the spleen-only
# one, whose 117-class files its overlay (data_manifests/overlays/) maps to spleen / rest
RAW_LABELS_DIFFER = {"totalsegmentator_examples", "totalsegmentator_ct_spleen"}
LABELLED = [m for m in MANIFESTS if m.stem not in RAW_LABELS_DIFFER]
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
    (item,) = load_manifest(REPO / "data_manifests" / "sct_spinalcord_t2.json")
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


@pytest.mark.parametrize("manifest", LABELLED, ids=[m.stem for m in LABELLED])
def test_labels_name_every_value_of_the_label_files(manifest):
    """The check stage refuses a label value the datalist does not name: every labelled case passes it."""
    labels, load = manifest_labels(manifest), LoadImage(image_only=True)
    for split in ("training", "validation"):
        if split not in json.loads(manifest.read_text()):
            continue
        for item in load_manifest(manifest, split):
            check_label_values(load(item["label"]), labels, item["label"])


def _label_table(path: Path) -> dict[int, str]:
    """value -> name from a TotalSegmentator label file's NIfTI header extension (CaretExtension LabelTable)."""
    (extension,) = nib.load(path).header.extensions  # type: ignore[attr-defined]
    return {int(k): v for k, v in re.findall(r'Key="(\d+)".*?CDATA\[(.*?)\]', extension.get_content().decode(), re.S)}


@pytest.mark.parametrize(
    ("name", "count"), [("totalsegmentator_ct", 117), ("totalsegmentator_ct_dicom", 117), ("totalsegmentator_mr", 50)]
)
def test_totalsegmentator_class_names_are_the_label_files_own(name, count):
    """All classes of the task's table (CT 'total': 117, MR 'total_mr': 50), named as the label files name them."""
    manifest = REPO / "data_manifests" / f"{name}.json"
    table = _label_table(
        SHARED / "totalsegmentator-examples" / ("example_seg_mr.nii.gz" if "mr" in name else "example_seg.nii.gz")
    )
    assert len(table) == count
    assert manifest_class_names(manifest) == table
    assert manifest_labels(manifest)[0] == "background"


def test_spleen_only_overlay_maps_the_totalsegmentator_label_to_spleen():
    """The spleen-only datalist's overlay (its stages::labels) turns the 117-class label into spleen (1) / rest (0)
    in memory, through the bundle's own load, check and labels stages (train.json with ct.json and the overlay)."""
    manifest = REPO / "data_manifests" / "totalsegmentator_ct_spleen.json"
    parser = ConfigParser()
    bundle, overlay = REPO / "bundles" / "unet", manifest.parent / "overlays" / manifest.name
    parser.read_config([str(bundle / "train.json"), str(bundle / "ct.json"), str(overlay)])
    parser.update({"manifest": str(manifest)})
    (item,) = load_manifest(manifest, "validation")
    raw = np.asanyarray(nib.load(item["label"]).dataobj)
    assert len(np.unique(raw)) > 20 and (raw == 1).any()
    stages = parser.get_parsed_content("stages")
    for transform in stages["load"] + stages["check"] + stages["labels"]:
        item = transform(item)
    np.testing.assert_array_equal(item["label"][0].numpy(), (raw == 1).astype(np.float32))
    assert manifest_class_names(manifest) == {1: "spleen"}
