"""The 3D CT and MR starting overlays (``bundles/unet/ct.json``, ``mr.json``) on train.json and inference.json:
they parse, their stages reorient to RAS, resample to the target spacing (nearest for labels) and normalise by
modality, their network fits, and a 1-epoch tiny training runs through the real CLI on the shared real volumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unet"
SHARED = REPO.parent / "shared" / "data"
MANIFESTS = REPO / "data_manifests"
OVERLAYS = ["ct.json", "mr.json"]
TARGET: dict[str, list[float]] = {"ct.json": [1.5, 1.5, 3.0], "mr.json": [1.0, 1.0, 1.0]}
SPLEEN_ONLY = MANIFESTS / "overlays" / "totalsegmentator_ct_spleen.json"  # maps the 117-class label to spleen
NEW_IDS = {"target_spacing"}  # ids the overlays add (so that --target_spacing is a valid override)


def parsed(base: str, overlay: str, tmp_path: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / base), str(BUNDLE / overlay)])
    parser.update({"bundle_root": str(tmp_path), **overrides})
    return parser


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_sets_only_ids_of_train_json(overlay: str) -> None:
    """Every id the overlay sets is one of train.json's (MONAI would add a misspelt one silently), bar
    ``target_spacing``; the geometry and intensity stages and the network ids are inference.json's too."""
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(BUNDLE / "train.json"))
    infer.read_config(str(BUNDLE / "inference.json"))
    keys = set(ConfigParser.load_config_file(str(BUNDLE / overlay)))
    assert NEW_IDS <= keys
    for key in keys - NEW_IDS:
        assert key in train, f"{overlay} sets {key}, which train.json does not have"
    shared = {"spatial_dims", "features", "norm", "pool_sizes", "kernel_sizes", "val_output_patch_size"}
    for key in shared | {k for k in keys if k.startswith("stages::")}:
        assert key in keys and key in infer, f"{overlay}: {key} must be set and be an id of inference.json"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("base", ["train.json", "inference.json"])
def test_overlay_parses_with_a_network_that_fits_its_patches(tmp_path: Path, base: str, overlay: str) -> None:
    """With either base config the network is a 3D BatchNorm PaperUNet of the overlay's pooling plan, the validation
    tiles are valid outputs; in training the patch is the smallest input for ``output_patch_size``."""
    parser = parsed(base, overlay, tmp_path)
    network = parser.get_parsed_content("network_def")
    assert network.spatial_dims == 3 and network.in_channels == 1
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in network.modules())
    if overlay == "ct.json":  # 1.5 x 1.5 x 3 mm: no pooling and no context along the 3 mm axis at the finest level
        assert network.pool_sizes[0] == (2, 2, 1) and network.kernel_sizes[0] == (3, 3, 1)
        assert network.pool_grid == (8, 8, 4)
    else:
        assert network.isotropic
    tile = parser.get_parsed_content("val_output_patch_size")
    assert network.output_shape(network.input_shape_for(tile)) == tuple(tile)
    if base == "train.json":
        patch = parser.get_parsed_content("patch_size")
        assert patch == network.input_shape_for(parser.get_parsed_content("output_patch_size"))
        assert parser.get_parsed_content("pos_fraction") == 0.33


def write_volume(path: Path, array: np.ndarray, spacing: tuple[float, ...], codes: str = "LPS") -> np.ndarray:
    """Write ``array`` stored along axis ``codes`` with voxel size ``spacing`` (mm); returns the RAS affine."""
    axis = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    for i, code in enumerate(codes):
        world, sign = axis[code]
        affine[:3, i] = 0
        affine[world, i] = sign * spacing[i]
    affine[:3, 3] = [10.0, -20.0, 30.0]
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return affine


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_stages_resample_image_and_label_to_ras_target_spacing(tmp_path: Path, overlay: str) -> None:
    """train.json's preprocessing stages with the overlay: a LPS 0.8 x 0.8 x 5 mm image and label come out RAS at the
    target spacing on one grid, the label still 0/1 (nearest), the image normalised by the overlay's scheme."""
    rng = np.random.default_rng(0)
    label = np.zeros((40, 36, 8), np.uint8)
    label[10:30, 8:20, 2:6] = 1
    image = (rng.normal(0, 20, label.shape) + np.where(label, 300.0, -200.0)).astype(np.float32)
    write_volume(tmp_path / "img.nii.gz", image, (0.8, 0.8, 5.0))
    write_volume(tmp_path / "seg.nii.gz", label, (0.8, 0.8, 5.0))
    parser = parsed("train.json", overlay, tmp_path, label_values=[0, 1])
    stages = parser.get_parsed_content("load_transforms")
    item: dict[str, Any] = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "seg.nii.gz")}
    for transform in stages:
        item = transform(item)
    out_image, out_label = item["image"], item["label"]
    assert nib.aff2axcodes(np.asarray(out_image.affine)) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out_image.affine)[:3, :3], axis=0), TARGET[overlay])
    np.testing.assert_allclose(np.asarray(out_label.affine), np.asarray(out_image.affine))
    assert out_label.shape == out_image.shape
    assert set(torch.unique(out_label).tolist()) == {0.0, 1.0}
    inside = out_image[out_label > 0]
    if overlay == "ct.json":  # clip [-1000, 1000] HU, then (HU - 0) / 250
        assert float(out_image.max()) <= 4.0 and float(out_image.min()) >= -4.0
        assert abs(float(inside.median()) - 300.0 / 250.0) < 0.05  # the median: bilinear blurs the border
    else:  # z-score over the non-zero voxels
        assert abs(float(out_image[out_image != 0].mean())) < 1e-3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_stages_invert_onto_the_input_grid(tmp_path: Path, overlay: str) -> None:
    """inference.json's preprocessing with the overlay goes to RAS at the target spacing, and its ``invert`` step
    (``Invertd``, nearest) puts a label on the preprocessed grid back onto the input's PSR grid: shape and affine."""
    image = np.random.default_rng(0).normal(0, 1, (30, 24, 6)).astype(np.float32)
    affine = write_volume(tmp_path / "img.nii.gz", image, (0.8, 0.8, 5.0), codes="PSR")
    parser = parsed("inference.json", overlay, tmp_path)
    item = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "img.nii.gz")})
    assert nib.aff2axcodes(np.asarray(item["image"].affine)) == ("R", "A", "S")
    item["pred"] = item["image"][:1].clone().gt(0).float()
    back = parser.get_parsed_content("invert")(item)
    assert tuple(back["pred"].shape[1:]) == image.shape
    np.testing.assert_allclose(np.asarray(back["pred"].affine), affine, atol=1e-4)


def train_tiny(tmp_path: Path, overlay: str, manifest: Path, *extra: str) -> subprocess.CompletedProcess:
    """One epoch of one iteration (batch 1, tiny features), validating once, through the real CLI."""
    configs = f"['{BUNDLE / 'train.json'}','{BUNDLE / overlay}'" + "".join(f",'{e}'" for e in extra) + "]"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs,
        "--bundle_root", str(tmp_path), "--manifest", str(manifest), "--features", "[4,4,8,8]", "--epochs", "1",
        "--iterations_per_epoch", "1", "--val_interval", "1", "--batch_size", "1", "--device", "$torch.device('cpu')",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")
@pytest.mark.parametrize(
    ("overlay", "manifest", "extra"),
    [
        ("ct.json", "msd_spleen_ct_crop.json", []),
        ("mr.json", "sct_spinalcord_t2.json", []),
        (
            "ct.json",
            "totalsegmentator_ct_spleen.json",
            [str(MANIFESTS / "overlays" / "totalsegmentator_ct_spleen.json")],
        ),
    ],
    ids=["ct-msd-spleen", "mr-sct-t2", "ct-totalseg-spleen-only"],
)
def test_tiny_training_on_real_volumes(tmp_path: Path, overlay: str, manifest: str, extra: list[str]) -> None:
    """A 1-epoch tiny run trains and validates on the real volume and writes the best and the last checkpoint."""
    proc = train_tiny(tmp_path, overlay, MANIFESTS / manifest, *extra)
    assert "val_mean_dice" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["head.weight"].shape[:2] == (2, 4)
    assert (tmp_path / "models" / "last.pt").is_file()
