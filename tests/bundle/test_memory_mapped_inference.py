"""``inference.json`` with ``--memory_mapped True``: the same labels and affine as the in-RAM path, through the CLI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_unet_bundle import REPO, run_bundle

from unet_monai.data import synthetic_em_volume
from unet_monai.networks import PaperUNet

CONFIGS = ["bundles/unet/inference.json", "bundles/unet/train_3d.json"]
MAPPED = [*CONFIGS, "bundles/unet/memory_mapped.json"]
SMALL = ["--features", "[4,8]", "--val_output_patch_size", "[24,24,24]"]
AFFINE = np.array([[0.0, -0.9, 0.0, 30.0], [0.6, 0.0, 0.0, -8.0], [0.0, 0.0, 1.5, 12.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.mark.integration
def test_memory_mapped_inference_matches_in_ram(tmp_path: Path, synthetic_em_3d: Path) -> None:
    small = [*SMALL, "--dataset_dir", str(synthetic_em_3d)]  # the label names come from the 3D manifest
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8), norm="batch")
    (tmp_path / "models").mkdir()
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    image, _ = synthetic_em_volume((70, 58, 45), seed=4)
    volume = nib.Nifti1Image((image * 800 - 300).astype(np.float32), AFFINE)
    nib.save(volume, tmp_path / "em.nii")
    nib.save(volume, tmp_path / "em.nii.gz")

    run_bundle(
        "inference",
        CONFIGS,
        tmp_path,
        *small,
        "--input",
        str(tmp_path / "em.nii.gz"),
        "--output_dir",
        str(tmp_path / "ram"),
    )
    run_bundle(
        "inference",
        MAPPED,
        tmp_path,
        *small,
        "--input",
        str(tmp_path / "em.nii"),
        "--output_dir",
        str(tmp_path / "mapped"),
    )

    in_ram, mapped = nib.load(tmp_path / "ram" / "em_seg.nii.gz"), nib.load(tmp_path / "mapped" / "em_seg.nii.gz")
    assert mapped.shape == in_ram.shape == volume.shape
    np.testing.assert_allclose(mapped.affine, AFFINE, atol=1e-5)
    labels, reference = np.asarray(mapped.dataobj), np.asarray(in_ram.dataobj)
    assert reference.any() and (~reference.astype(bool)).any()  # both classes occur: the comparison means something
    assert (labels == reference).mean() > 0.9999  # statistics in float64 vs float32: a tie may flip
    assert sorted(p.name for p in (tmp_path / "mapped").iterdir()) == ["em_seg.nii.gz"]  # no scratch file left


def test_overlay_reads_through_the_memory_mapped_loader(tmp_path: Path) -> None:
    """The overlay's preprocessing starts with ``LoadMemmapNiftid`` (so a ``.nii.gz`` is refused by name, as
    ``tests/io/test_memmap.py`` checks), where ``inference.json`` alone reads the volume into RAM."""
    from monai.bundle import ConfigParser

    from unet_monai.io import LoadMemmapNiftid

    def first_loader(configs: list[str]) -> object:
        parser = ConfigParser()
        parser.read_config([str(REPO / c) for c in configs])
        parser["bundle_root"] = str(tmp_path)
        return parser.get_parsed_content("preprocessing").transforms[0]

    assert isinstance(first_loader(MAPPED), LoadMemmapNiftid)
    assert not isinstance(first_loader(CONFIGS), LoadMemmapNiftid)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), AFFINE), tmp_path / "em.nii.gz")
    with pytest.raises(ValueError, match="uncompressed .nii") as info:
        first_loader(MAPPED)({"image": str(tmp_path / "em.nii.gz")})
    assert str(tmp_path / "em.nii.gz") in str(info.value)
