"""The ISBI 2012 stack splitter: challenge-style TIFF stacks in, the manifest's PNG layout out (real CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_monai.data.isbi2012 import write_isbi2012_sections

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012"


def write_stack(pages: list[np.ndarray], path: Path) -> Path:
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(path, format="TIFF", save_all=True, append_images=rest)
    return path


@pytest.mark.integration
@pytest.mark.skipif(not ISBI.is_dir(), reason=f"shared ISBI 2012 data not found at {ISBI}")
def test_cli_writes_the_sections_the_manifest_names(tmp_path: Path) -> None:
    images = [np.array(Image.open(ISBI / "train" / "image" / f"{i}.png")) for i in range(3)]
    labels = [np.array(Image.open(ISBI / "train" / "label" / f"{i}.png")) for i in range(3)]
    tests = [np.array(Image.open(ISBI / "test" / f"{i}.png")) for i in range(2)]
    volume = write_stack(images, tmp_path / "train-volume.tif")
    masks = write_stack(labels, tmp_path / "train-labels.tif")
    test = write_stack(tests, tmp_path / "test-volume.tif")
    out = tmp_path / "isbi2012"
    cmd = [sys.executable, "-m", "unet_monai.data.isbi2012", str(volume), str(masks), str(out), "--test", str(test)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 training sections" in proc.stdout
    for i in range(3):
        np.testing.assert_array_equal(np.array(Image.open(out / "train" / "image" / f"{i}.png")), images[i])
        np.testing.assert_array_equal(np.array(Image.open(out / "train" / "label" / f"{i}.png")), labels[i])
    for i in range(2):
        np.testing.assert_array_equal(np.array(Image.open(out / "test" / f"{i}.png")), tests[i])


def test_stacks_that_do_not_match_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = write_stack([rng.integers(0, 255, (8, 6), dtype=np.uint8) for _ in range(3)], tmp_path / "v.tif")
    labels = write_stack([rng.integers(0, 255, (8, 6), dtype=np.uint8) for _ in range(2)], tmp_path / "l.tif")
    with pytest.raises(ValueError, match="3 sections .* but .* has 2"):
        write_isbi2012_sections(volume, labels, tmp_path / "out")
    wide = write_stack([np.zeros((8, 6), dtype=np.uint16)], tmp_path / "w.tif")
    with pytest.raises(ValueError, match="8-bit"):
        write_isbi2012_sections(wide, wide, tmp_path / "out")
    assert not (tmp_path / "out").exists()
