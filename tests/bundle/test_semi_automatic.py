"""``semi_automatic.json``: one command trains on the annotated slices of one volume and writes its dense
segmentation on the volume's own grid (real CLI process, a real sparse label made by ``write_sparse_datalist``)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_unet_bundle import run_bundle

from unet_monai.data import write_sparse_datalist

CONFIGS = ["bundles/unet/train.json", "bundles/unet/train_3d.json", "bundles/unet/semi_automatic.json"]
TINY_3D = ["--features", "[4,8,16]", "--output_patch_size", "[12,12,12]", "--val_output_patch_size", "[32,32,16]"]


def blob_volume(folder: Path, stored: str = "RAS") -> tuple[Path, np.ndarray]:
    """A 40x36x20 volume of 0.8 x 0.8 x 2.5 mm voxels with an ellipsoid (label 1) brighter than the rest, and its
    dense datalist; the label is smaller along z than a 3D net's context (mirrored borders). ``stored`` "ASR": the
    same world geometry stored with the axes permuted (array 36x20x40)."""
    shape = (40, 36, 20)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    label = (((grid[0] - 20) / 12) ** 2 + ((grid[1] - 18) / 10) ** 2 + ((grid[2] - 10) / 6) ** 2 <= 1).astype(np.uint8)
    image = (label * 2.0 + np.random.default_rng(0).normal(0, 0.3, shape)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -5, 3]
    if stored == "ASR":
        label, image, affine = label.transpose(1, 2, 0), image.transpose(1, 2, 0), affine[:, [1, 2, 0, 3]]
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(image, affine), folder / "vol.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / "vol_label.nii.gz")
    datalist = {"labels": {"0": "background", "1": "blob"}, "training": [
        {"image": "vol.nii.gz", "label": "vol_label.nii.gz", "case_id": "vol"}]}  # fmt: skip
    (folder / "dense.json").write_text(json.dumps(datalist))
    return folder / "dense.json", affine


@pytest.mark.integration
@pytest.mark.parametrize("stored", ["RAS", "ASR"])
def test_semi_automatic_trains_on_annotated_slices_and_writes_the_dense_label(tmp_path: Path, stored: str) -> None:
    """Stored ASR with an orientation stage: trained in RAS, the dense label and the annotated-voxel scores come
    back on the stored grid (the label is inverted with the prediction)."""
    dense, affine = blob_volume(tmp_path / "data", stored)
    sparse = write_sparse_datalist(dense, tmp_path / "sparse", k=1)  # one slice per axis, the rest 255
    epochs = ["--epochs", "2", "--iterations_per_epoch", "1", "--batch_size", "1"]
    configs = CONFIGS
    if stored != "RAS":
        overlay = tmp_path / "ras.json"
        stage = [{"_target_": "Orientationd", "keys": "@spatial_keys", "axcodes": "RAS"}]
        overlay.write_text(json.dumps({"stages::orientation": stage}))
        configs = [*CONFIGS[:-1], str(overlay), CONFIGS[-1]]
    run_bundle("semi_automatic", configs, tmp_path / "root", *TINY_3D, *epochs, "--manifest", str(sparse))
    out = tmp_path / "root" / "eval"
    written = nib.load(out / "vol_dense.nii.gz")
    shape = (40, 36, 20) if stored == "RAS" else (36, 20, 40)
    assert written.shape == shape and np.allclose(written.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}
    with open(out / "annotated_per_case.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))  # scored on the annotated voxels only (the ignore value left out)
    assert row["case"] == "vol" and 0.0 <= float(row["dice_blob"]) <= 1.0
    assert (tmp_path / "root" / "models" / "last.pt").is_file()


@pytest.mark.integration
def test_semi_automatic_trains_for_its_time_budget_not_train_jsons_epochs(tmp_path: Path) -> None:
    """The overlay's own stop is its time budget (10 minutes unless ``--time_limit_minutes`` says otherwise), not
    ``train.json``'s 40 epochs of 6 iterations: a run without ``--epochs`` ends at the budget, with one bar for the
    whole run in place of ignite's bar per epoch."""
    dense, _ = blob_volume(tmp_path / "data")
    sparse = write_sparse_datalist(dense, tmp_path / "sparse", k=1)
    proc = run_bundle(
        "semi_automatic", CONFIGS, tmp_path / "root", *TINY_3D, "--batch_size", "1", "--manifest", str(sparse),
        "--time_limit_minutes", "0.1",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "Training stopped at its time budget of 0.1 min" in log
    assert "training (budget 0.1 min): 100%" in log and "Epoch [1/" not in log
    with open(tmp_path / "root" / "eval" / "training_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (tmp_path / "root" / "eval" / "vol_dense.nii.gz").is_file()
    stopped = re.search(r"Training stopped at its time budget of 0.1 min \(iteration (\d+), epoch", log)
    assert stopped, log[-2000:]
    last = int(stopped.group(1))
    saved = torch.load(tmp_path / "root" / "models" / "last.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == last  # the net that wrote the dense label, mid-epoch too
    # the overlay's 10 iterations per epoch, and the last row ends where training stopped (an epoch cut short too)
    assert all(row["iteration"] == str(10 * int(row["epoch"])) for row in rows[:-1])
    epoch = int(rows[-1]["epoch"])
    assert int(rows[-1]["iteration"]) == last and 10 * (epoch - 1) < last <= 10 * epoch
