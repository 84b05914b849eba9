"""Geometry through the real bundle CLI: every label inference writes lies on its input's own grid.

Two acceptance checks of issue 18, both through ``python -m monai.bundle run inference`` with the 3D overlays
(``bundles/unet/ct.json`` / ``mr.json``: RAS, a target spacing, inverted after the network by ``Invertd``):

- the shared real volumes (MSD spleen crop 0.8 x 0.8 x 5 mm RAS, SCT cord T2 stored PSR, TotalSegmentator CT RAS
  and MR LPS, the JPEG 2000 CT DICOM series): each written label has the input's shape and affine, and its voxels
  agree with SimpleITK's nearest-neighbour resampling of the same prediction (made here, in the test, with the
  same configs' preprocessing, network and inferer) onto the input's grid;
- a phantom of known world geometry, written at three spacings and in RAS, LPS and PSR storage, goes through
  planning, preprocessing and inference with a network that returns its input's label channel: each written label
  has the input's shape and affine and matches the phantom's label on the input grid.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unet"
SHARED = REPO.parent / "shared" / "data"
TINY = ["--features", "[4,4,8,8]"]  # ids of inference.json: a tiny network, the overlay's pooling plan
AFFINE_ATOL_MM = 1e-4
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's world) for 4 x 4 affines

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")


# ---------------------------------------------------------------- SimpleITK: grids and resampling
def sitk_grid(affine_ras: np.ndarray, shape: Sequence[int]) -> sitk.Image:
    """An empty SimpleITK image on the grid of a RAS voxel-to-world ``affine_ras`` (mm) and ``shape`` (voxels)."""
    affine = LPS @ np.asarray(affine_ras, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """The RAS voxel-to-world affine (mm) of a SimpleITK image (ITK's geometry is LPS)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return LPS @ affine


def sitk_resample_nearest(label: np.ndarray, affine_ras: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """``label`` ``(X, Y, Z)`` on the grid of ``affine_ras``, resampled by SimpleITK (nearest neighbour, 0 outside)
    onto ``reference``'s grid; returned ``(X, Y, Z)`` in the reference's voxel order."""
    moving = sitk.GetImageFromArray(np.ascontiguousarray(label.astype(np.uint8).transpose(2, 1, 0)))
    moving.CopyInformation(sitk_grid(affine_ras, label.shape))
    out = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def read_input_grid(path: Path) -> sitk.Image:
    """The input's grid as SimpleITK reads it, independently of MONAI: a NIfTI file or a DICOM series folder."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        reader.MetaDataDictionaryArrayUpdateOff()
        return reader.Execute()
    return sitk.ReadImage(str(path))


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    return cast(nib.Nifti1Image, nib.load(path))


def dice(a: np.ndarray, b: np.ndarray, value: int = 1) -> float:
    """Dice of the voxels equal to ``value`` in ``a`` and ``b`` (1.0 when both have none)."""
    a, b = a == value, b == value
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


# ---------------------------------------------------------------- the bundle, in the test and through its CLI
def config_paths(*overlays: str) -> list[str]:
    return [str(BUNDLE / "inference.json"), *(str(BUNDLE / o) if "/" not in o else o for o in overlays)]


def parse(configs: list[str], bundle_root: Path, overrides: dict) -> ConfigParser:
    """The configs as the CLI reads them (same files, same overrides), for the test's own pass."""
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(bundle_root), "device": "$torch.device('cpu')", **overrides})
    return parser


def run_inference(configs: list[str], bundle_root: Path, *args: str) -> None:
    """``python -m monai.bundle run inference --config_file [...] --bundle_root ... <args>``, from ``bundle_root``."""
    config = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", config]
    cmd += ["--bundle_root", str(bundle_root), "--device", "$torch.device('cpu')", *args]
    proc = subprocess.run(cmd, cwd=bundle_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def predict(parser: ConfigParser, image: str) -> tuple[np.ndarray, np.ndarray]:
    """The prediction of the parsed bundle's network on ``image`` after its preprocessing: class indices
    ``(X, Y, Z)`` on the preprocessed grid, and that grid's RAS affine (mm)."""
    item = parser.get_parsed_content("preprocessing")({"image": image})
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    network.eval()
    with torch.no_grad():
        logits = inferer(item["image"][None].as_tensor(), network)  # (1, C, X, Y, Z)
    return logits[0].argmax(0).numpy().astype(np.uint8), np.asarray(item["image"].affine, dtype=np.float64)


def random_checkpoint(parser: ConfigParser, first_image: str, path: Path) -> None:
    """Save the parsed network's random weights with a head bias that puts half the voxels of ``first_image`` in
    class 1 (the weights do not matter for geometry; both classes must occur)."""
    network = parser.get_parsed_content("network")
    network.eval()
    item = parser.get_parsed_content("preprocessing")({"image": first_image})
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(item["image"][None].as_tensor(), network)[0].float()
        network.head.bias[1] -= (logits[1] - logits[0]).median()
    torch.save(network.state_dict(), path)


# ---------------------------------------------------------------- a) the shared real volumes
SPLEEN = "msd-spleen-ct-crop/sub-spleen2_ct.nii.gz"  # 0.8 x 0.8 x 5 mm, RAS
CORD_T2 = "sct-spinalcord-mr/t2/t2.nii.gz"  # 1 mm, stored PSR
TS_CT = "totalsegmentator-examples/example_ct_sm.nii.gz"  # 3 mm, RAS
TS_MR = "totalsegmentator-examples/example_mr_sm.nii.gz"  # 3 mm, LPS
TS_DICOM = "totalsegmentator-examples/example_ct_dicom"  # JPEG 2000 series, 0.98 x 0.98 x 2 mm
REAL = [
    pytest.param("mr.json", [CORD_T2], id="mr-cord-t2-psr"),
    pytest.param("ct.json", [SPLEEN, TS_CT, TS_DICOM], id="ct-spleen-totalseg-dicom", marks=pytest.mark.slow),
    pytest.param("mr.json", [TS_MR], id="mr-totalseg-lps", marks=pytest.mark.slow),
]


@needs_shared
@pytest.mark.integration
@pytest.mark.parametrize(("overlay", "cases"), REAL)
def test_real_volumes_labels_on_the_input_grid(tmp_path: Path, overlay: str, cases: list[str]) -> None:
    """Inference with a 3D overlay (RAS, target spacing, inverted afterwards) writes, for every real input, a label
    with the input's shape and affine (SimpleITK's reading of the input, within 1e-4 mm) whose voxels agree with
    SimpleITK's nearest-neighbour resampling of the network's prediction on the preprocessed grid (Dice >= 0.99;
    both classes occur). All cases of a modality run in one CLI start (a datalist input)."""
    torch.set_num_threads(1)
    images = [str(SHARED / c) for c in cases]
    configs = config_paths(overlay)
    parser = parse(configs, tmp_path, {"features": [4, 4, 8, 8]})
    checkpoint = tmp_path / "model.pt"
    random_checkpoint(parser, images[0], checkpoint)
    predictions = {image: predict(parser, image) for image in images}  # (X, Y, Z) class indices, RAS affine

    datalist = tmp_path / "cases.json"
    datalist.write_text(json.dumps({"test": [{"image": image} for image in images]}))
    out = tmp_path / "out"
    run_inference(
        configs, tmp_path, *TINY, "--input", str(datalist), "--split", "test", "--ckpt_path", str(checkpoint),
        "--output_dir", str(out),
    )  # fmt: skip
    scores = {}
    for image in images:
        written = load_nifti(out / (Path(image).name.removesuffix(".nii.gz") + "_seg.nii.gz"))
        grid = read_input_grid(Path(image))
        assert written.shape == tuple(grid.GetSize()), image
        np.testing.assert_allclose(written.affine, sitk_affine_ras(grid), atol=AFFINE_ATOL_MM, err_msg=image)
        label = np.asanyarray(written.dataobj)
        expected = sitk_resample_nearest(*predictions[image], grid)
        assert 0.05 < (expected == 1).mean() < 0.95, f"{image}: the prediction must hold both classes"
        scores[Path(image).name] = dice(label, expected)
    print("Dice with SimpleITK's resampling of the prediction, per case:", scores)
    assert all(score >= 0.99 for score in scores.values()), scores


# ---------------------------------------------------------------- b) the phantom round trip through planning
FIELD_CENTRE_MM = np.array([12.0, -18.0, 25.0])  # RAS world
FIELD_HALF_MM = np.array([90.0, 75.0, 65.0])  # half the field of view along R, A, S
ELLIPSOID_CENTRE_MM = FIELD_CENTRE_MM + np.array([6.0, -4.0, 3.0])
ELLIPSOID_SEMI_AXES_MM = np.array([70.0, 50.0, 40.0])
AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
SPACINGS = {"0.8x0.8x5": (0.8, 0.8, 5.0), "1.5iso": (1.5, 1.5, 1.5), "3iso": (3.0, 3.0, 3.0)}
STORAGES = ("RAS", "LPS", "PSR")


def _rotation() -> np.ndarray:
    """The ellipsoid's axes in the world: 30 degrees about S, then 15 degrees about R (no symmetry of the field
    of view maps it onto itself, so a flipped or swapped axis shows)."""
    a, b = np.deg2rad(30.0), np.deg2rad(15.0)
    about_s = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_r = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_r @ about_s


def phantom_affine(storage: str, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The RAS affine (mm) and shape (voxels) of the field of view stored along ``storage``'s axis codes (voxel
    axis i points to ``storage[i]``) with voxel size ``spacing[i]`` along voxel axis i."""
    affine, shape = np.eye(4), []
    for i, code in enumerate(storage):
        world_axis, sign = AXIS[code]
        n = int(round(2 * FIELD_HALF_MM[world_axis] / spacing[i]))
        affine[:3, i] = 0.0
        affine[world_axis, i] = sign * spacing[i]
        shape.append(n)
    affine[:3, 3] = FIELD_CENTRE_MM - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return affine, tuple(shape)


def ellipsoid_field(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``1 - q`` at every voxel centre, ``q`` the ellipsoid's quadratic form in world mm: >= 0 inside."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    local = (world - ELLIPSOID_CENTRE_MM) @ _rotation() / ELLIPSOID_SEMI_AXES_MM
    return (1.0 - (local**2).sum(axis=1)).reshape(shape).astype(np.float32)


def write_phantoms(folder: Path) -> Path:
    """The phantom at three spacings and in RAS, LPS and PSR storage: per case a CT-like intensity channel, the
    label channel (the ellipsoid's level set ``1 - q``; the label is where it is >= 0, so the plan's CT
    normalisation, a clip to the foreground percentiles and a z-score, keeps it informative, where a binary
    channel would be clipped to a constant) and the label. Returns the datalist (``training`` and ``test``)."""
    entries = []
    for storage in STORAGES:
        for tag, spacing in SPACINGS.items():
            affine, shape = phantom_affine(storage, spacing)
            field = ellipsoid_field(affine, shape)
            label = (field >= 0).astype(np.uint8)
            world_x = (
                affine[0, 0] * np.arange(shape[0])[:, None, None] + affine[0, 3]
            )  # a gentle gradient along the first stored axis
            intensity = (-100.0 + 160.0 * label + 0.2 * np.broadcast_to(world_x, shape)).astype(np.float32)
            name = f"{storage}_{tag}"
            for suffix, array in (("ct", intensity), ("level", field), ("label", label)):
                nib.save(nib.Nifti1Image(array, affine), str(folder / f"{name}_{suffix}.nii.gz"))
            entries.append(name)
    datalist = {
        "name": "phantom",
        "modality": {"0": "CT", "1": "CT"},
        "labels": {"0": "background", "1": "ellipsoid"},
        "training": [
            {"image": [f"{n}_ct.nii.gz", f"{n}_level.nii.gz"], "label": f"{n}_label.nii.gz", "case_id": n}
            for n in entries
        ],
        "test": [{"image": [f"{n}_ct.nii.gz", f"{n}_level.nii.gz"], "case_id": n} for n in entries],
    }
    path = folder / "phantom.json"
    path.write_text(json.dumps(datalist, indent=2))
    return path


def pass_label_channel(network: Any, threshold: float) -> None:
    """Hand-set weights of a PaperUNet with one feature per level: the class-1 logit is ``relu(x1 - threshold)``
    of input channel 1 at the voxel's own (centre) position, the class-0 logit 0, so the argmax is
    ``x1 > threshold``: the first convolution takes channel 1 minus the threshold, every other convolution of the
    finest level passes channel 0 through (the skip's channel comes first in the concatenation), and every coarser
    level, the up-convolutions and the other weights are zero."""
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()

        def centre(conv: Any, in_channel: int) -> None:
            conv.weight[(0, in_channel, *[k // 2 for k in conv.weight.shape[2:]])] = 1.0

        first, second = network.encoder.stem[0][0], network.encoder.stem[1][0]
        centre(first, 1)
        first.bias[0] = -threshold
        centre(second, 0)
        last = network.decoder.ups[-1].conv
        centre(last[0][0], 0)
        centre(last[1][0], 0)
        network.head.weight[1, 0] = 1.0
        for module in network.modules():  # BatchNorm as a fresh one: identity in eval mode
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()
                module.reset_running_stats()


def run_bundle(entry: str, configs: list[str], bundle_root: Path, *args: str) -> None:
    """``python -m monai.bundle run <entry> --config_file [...] --bundle_root ... <args>``, from ``bundle_root``."""
    config = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", entry, "--config_file", config, "--bundle_root"]
    proc = subprocess.run([*cmd, str(bundle_root), *args], cwd=bundle_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not (BUNDLE / "plan.json").is_file(), reason="bundles/unet/plan.json (planning) not found")
def test_phantom_round_trip_through_planning_and_inference(tmp_path: Path) -> None:
    """The phantom (known world geometry, 3 spacings x RAS/LPS/PSR storage) is planned with plan.json, and inference
    with the plan's overlay (its orientation, spacing and normalisation stages, its pooling plan) and a network that
    returns the input's label channel writes, for every case, a label with the input's shape and affine (1e-4 mm)
    and Dice >= 0.98 with the phantom's label on the input grid."""
    torch.set_num_threads(1)
    data = tmp_path / "data"
    data.mkdir()
    datalist = write_phantoms(data)
    overlay = tmp_path / "plan_overlay.json"
    run_bundle("planning", [str(BUNDLE / "plan.json")], tmp_path, "--manifest", str(datalist), "--output", str(overlay),
               "--progress", "False")  # fmt: skip
    plan = json.loads(overlay.read_text())
    assert plan["in_channels"] == 2 and plan["num_classes"] == 2
    scheme = plan["stages::intensity"][0]["schemes"][1]
    assert scheme["scheme"] == "ct"
    low, high = scheme["clip"]
    threshold_raw = low + 1e-3 * (high - low)  # just above the clip floor, which the background takes
    threshold = (threshold_raw - scheme["mean"]) / scheme["std"]

    features = ["--features", json.dumps([1] * len(plan["features"]))]
    configs = config_paths(str(overlay))
    parser = parse(configs, tmp_path, {"features": [1] * len(plan["features"])})
    network = parser.get_parsed_content("network_def")
    pass_label_channel(network, threshold)
    checkpoint = tmp_path / "model.pt"
    torch.save(network.state_dict(), checkpoint)

    out = tmp_path / "out"
    run_bundle("inference", configs, tmp_path, *features, "--input", str(datalist), "--split", "test",
               "--ckpt_path", str(checkpoint), "--output_dir", str(out), "--precision", "float32",
               "--device", "$torch.device('cpu')")  # fmt: skip
    scores = {}
    for entry in json.loads(datalist.read_text())["test"]:
        name = entry["case_id"]
        truth = load_nifti(data / f"{name}_label.nii.gz")
        written = load_nifti(out / f"{name}_ct_seg.nii.gz")
        assert written.shape == truth.shape, name
        np.testing.assert_allclose(written.affine, truth.affine, atol=AFFINE_ATOL_MM, err_msg=name)
        scores[name] = dice(np.asanyarray(written.dataobj), np.asanyarray(truth.dataobj))
    print(f"plan: spacing {plan['plan']['target_spacing']} mm, pool sizes {plan['pool_sizes']}; Dice per case", scores)
    assert all(score >= 0.98 for score in scores.values()), scores
