"""MONAI Label serves the bundle: the contract its ``BundleInferTask`` relies on (runs without MONAI Label), and a
real MONAI Label 0.8.5 server with ``apps/monailabel`` answering inference requests (needs an interpreter where
monailabel imports; see ``apps/monailabel/README.md``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monailabel_support import (
    INFER_CONFIGS,
    KEY_BUNDLE_ROOT,
    KEY_DEVICE,
    KEY_NETWORK_DEF,
    KEYS_INFERER,
    KEYS_POSTPROCESSING,
    KEYS_PREPROCESSING,
    METADATA_JSON,
    MODEL_PYTORCH,
    OUTPUT_KEY,
    PYTHON_ENV,
    REPO,
    copy_app,
    infer,
    make_zoo_bundle,
    monailabel_python,
    monailabel_server,
    monailabel_unavailable,
    replay_infer_task,
    run_steps,
)
from PIL import Image

SHARED_PNG = REPO.parent / "shared" / "data" / "isbi2012" / "test" / "0.png"
AFFINE_2D = np.array(  # an in-plane affine that a lost or transposed geometry cannot keep: flipped x, 0.5 x 0.8 mm
    [[-0.5, 0.0, 0.0, 12.5], [0.0, 0.8, 0.0, -30.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def write_geometry_case(source: Path, dest: Path, shape: tuple[int, int] = (200, 236)) -> Path:
    """A non-square crop of the 2D NIfTI ``source`` with :data:`AFFINE_2D`, written to ``dest``."""
    array = np.asarray(nib.load(source).dataobj, dtype=np.float32)[: shape[0], : shape[1]]
    nib.save(nib.Nifti1Image(array, AFFINE_2D), dest)
    return dest


def test_bundle_infer_task_contract(tmp_path: Path, write_nifti) -> None:
    """The zoo-layout bundle has what BundleInferTask reads, and its construction and inference steps succeed from
    a folder outside the repository: a label map of the input's shape and affine, with the metadata's labels."""
    bundle = make_zoo_bundle(tmp_path / "model" / "unet", checkpoint=None)
    assert not bundle.resolve().is_relative_to(REPO)
    assert (bundle / "configs" / INFER_CONFIGS[0]).is_file()
    assert (bundle / "models" / MODEL_PYTORCH).is_file()
    config = json.loads((bundle / "configs" / INFER_CONFIGS[0]).read_text())
    for key in (KEY_BUNDLE_ROOT, KEY_DEVICE, KEY_NETWORK_DEF):
        assert key in config, key
    for keys in (KEYS_PREPROCESSING, KEYS_INFERER, KEYS_POSTPROCESSING):
        assert any(k in config for k in keys), keys

    steps = replay_infer_task(bundle, device="cpu")
    assert steps.labels == {"cell": 0, "membrane": 1}  # metadata's channel_def; none is named "background"
    assert steps.dimension == 2
    meta = json.loads((bundle / "configs" / METADATA_JSON).read_text())
    assert steps.version == meta["version"]

    image = write_geometry_case(write_nifti("case.nii.gz", size=240), tmp_path / "case.nii.gz")
    data = run_steps(steps, image)
    pred = data[OUTPUT_KEY]
    assert tuple(pred.shape) == (1, 200, 236)  # before MONAI Label's Restored, which would hide a wrong size
    assert set(torch.unique(torch.as_tensor(pred)).tolist()) <= {0, 1}
    np.testing.assert_allclose(np.asarray(pred.affine), AFFINE_2D)


@pytest.fixture(scope="module")
def monailabel_interpreter() -> str:
    """An interpreter where MONAI Label 0.8.5's server imports, or the test is skipped with the reason."""
    python = monailabel_python()
    reason = monailabel_unavailable(python)
    if reason:
        pytest.skip(f"{reason} (set {PYTHON_ENV} to a Python with monailabel 0.8.5; apps/monailabel/README.md)")
    return python


@pytest.mark.slow
@pytest.mark.integration
def test_monailabel_server_infers_with_input_geometry(
    monailabel_interpreter: str, tmp_path: Path, tiny_2d_bundle: Path
) -> None:  # monailabel_interpreter first: a skip comes before the session's training run
    """``apps/monailabel`` serves the zoo bundle (trained, outside the repository) on 127.0.0.1: a NIfTI study gets a
    label map with its shape and affine, and the shared ISBI 2012 PNG (when present) one with its rows and columns."""
    app = copy_app(tmp_path / "app")
    bundle = make_zoo_bundle(tmp_path / "zoo" / "unet", tiny_2d_bundle / "models" / "model.pt")
    studies = tmp_path / "studies"
    studies.mkdir()
    test_images = sorted((tiny_2d_bundle / "data" / "synthetic_em_2d" / "imagesTs").glob("*.nii.gz"))
    nifti = write_geometry_case(test_images[0], studies / "em_case.nii.gz")
    cases = {"em_case": nifti}
    if SHARED_PNG.is_file():  # the shared file as it is, and a non-square crop that a transposed answer fails
        cases["isbi_test_0"] = studies / "isbi_test_0.png"
        cases["isbi_test_0"].write_bytes(SHARED_PNG.read_bytes())
        cases["isbi_crop"] = studies / "isbi_crop.png"
        Image.fromarray(np.asarray(Image.open(SHARED_PNG))[:300, :412]).save(cases["isbi_crop"])

    with monailabel_server(monailabel_interpreter, app, studies, bundle) as server:
        labels = {case: infer(server, case, tmp_path / "labels" / case) for case in cases}

    image, label = nib.load(nifti), nib.load(labels["em_case"])
    assert label.shape == image.shape
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)
    served = np.asarray(label.dataobj)
    assert set(np.unique(served).tolist()) <= {0, 1}
    assert not (bundle / "eval").exists()  # the app left the bundle's savers out: nothing written beside it
    local = run_steps(replay_infer_task(bundle), nifti)[OUTPUT_KEY][0].numpy()  # the same bundle, in this process
    assert np.mean(served == local) >= 0.99  # the server's torch may round a few boundary pixels differently
    for case in ("isbi_test_0", "isbi_crop") if SHARED_PNG.is_file() else ():
        source, result = np.asarray(Image.open(cases[case])), np.asarray(Image.open(labels[case]))
        assert labels[case].suffix == ".png"
        assert result.shape == source.shape  # (rows, columns), the input's order
        assert set(np.unique(result).tolist()) <= {0, 1}
