"""``inference.json`` with ``--adapt_norm True`` (test-time BatchNorm adaptation), through the CLI: labels on the
input's grid, the same from the memory-mapped path, different from the trained statistics' labels, and a clear
refusal for a network without BatchNorm."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from test_unet_bundle import REPO, TINY_INFER, refused_bundle_run, run_bundle

from unet_monai.data import synthetic_em_volume
from unet_monai.inferers import BatchNormAdaptInferer, FlipEnsembleInferer, batch_norms
from unet_monai.networks import PaperUNet

CONFIGS = ["bundles/unet/inference.json", "bundles/unet/train_3d.json"]
SMALL = ["--features", "[4,8]", "--val_output_patch_size", "[24,24,24]"]
AFFINE = np.array([[0.0, -0.9, 0.0, 30.0], [0.6, 0.0, 0.0, -8.0], [0.0, 0.0, 1.5, 12.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("flips", [False, True])
def test_adapt_norm_wraps_the_prediction_and_measures_on_the_plain_tiles(tmp_path: Path, flips: bool) -> None:
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles/unet/inference.json")])
    parser.update({"bundle_root": str(tmp_path), "adapt_norm": True, "test_time_flips": flips})
    assert parser.get_parsed_content("inferer").prior == 0.0  # the measured statistics alone by default
    parser["adapt_norm_prior"] = 0.5
    inferer = parser.get_parsed_content("inferer", lazy=False)
    assert isinstance(inferer, BatchNormAdaptInferer) and inferer.prior == 0.5
    assert isinstance(inferer.inferer, FlipEnsembleInferer) == flips
    assert inferer.stats_inferer is parser.get_parsed_content("tile_inferer")


@pytest.mark.integration
def test_adapted_labels_on_the_input_grid_in_ram_and_memory_mapped(tmp_path: Path, synthetic_em_3d: Path) -> None:
    small = [*SMALL, "--dataset_dir", str(synthetic_em_3d)]  # the label names come from the 3D manifest
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8), norm="batch")
    with torch.no_grad():  # statistics of another scan, as after training on one
        for m in batch_norms(net):
            m.running_mean.uniform_(-1.0, 1.0)
            m.running_var.uniform_(0.2, 4.0)
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    image, _ = synthetic_em_volume((70, 58, 45), seed=4)
    volume = nib.Nifti1Image((image * 800 - 300).astype(np.float32), AFFINE)
    nib.save(volume, tmp_path / "em.nii")

    def infer(name: str, *flags: str, configs: list[str] = CONFIGS) -> np.ndarray:
        args = ["--input", str(tmp_path / "em.nii"), "--output_dir", str(tmp_path / name)]
        run_bundle("inference", configs, tmp_path, *small, *args, *flags)
        written = nib.load(tmp_path / name / "em_seg.nii.gz")
        assert written.shape == volume.shape
        np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
        return np.asarray(written.dataobj)

    trained = infer("trained")
    adapted = infer("adapted", "--adapt_norm", "True")
    mapped = infer("mapped", "--adapt_norm", "True", configs=[*CONFIGS, "bundles/unet/memory_mapped.json"])
    assert adapted.any() and (~adapted.astype(bool)).any()  # both classes occur: the comparisons mean something
    assert (adapted != trained).mean() > 0.01  # the option changes the statistics the prediction uses
    assert (mapped == adapted).mean() > 0.999  # the memory-mapped path adapts the same way (float64 vs float32 ties)
    assert sorted(p.name for p in (tmp_path / "mapped").iterdir()) == ["em_seg.nii.gz"]  # the first pass left nothing


@pytest.mark.integration
def test_adapt_norm_without_batch_norm_is_refused_by_name(tmp_path: Path, tiny_2d_bundle: Path) -> None:
    """The default 2D network has no norm: the run fails and says which flag to drop."""
    checkpoint = ["--ckpt_path", str(tiny_2d_bundle / "models" / "model.pt"), "--output_dir", str(tmp_path / "out")]
    dataset = ["--dataset_dir", str(tiny_2d_bundle / "data" / "synthetic_em_2d")]
    adapt = ["--adapt_norm", "True"]
    output = refused_bundle_run(
        "inference", ["bundles/unet/inference.json"], tmp_path, *TINY_INFER, *adapt, *dataset, *checkpoint
    )
    assert "needs a network with BatchNorm layers" in output and "drop --adapt_norm" in output
