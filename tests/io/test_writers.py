"""AtomicNibabelWriter: round trips on the real spleen CT, and no partial file under the final name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImage, SaveImage

from unet_monai.io import AtomicNibabelWriter

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SPLEEN = DATA / "msd-spleen-ct-crop" / "sub-spleen2_ct.nii.gz"


@pytest.mark.skipif(not SPLEEN.is_file(), reason=f"shared spleen CT not found at {SPLEEN}")
def test_spleen_ct_round_trip_keeps_affine_and_voxels(tmp_path):
    image = LoadImage(image_only=True)(str(SPLEEN))
    SaveImage(
        output_dir=str(tmp_path),
        output_postfix="copy",
        separate_folder=False,
        writer=AtomicNibabelWriter,
        output_dtype=np.float32,
        print_log=False,
    )(image)
    written = tmp_path / "sub-spleen2_ct_copy.nii.gz"
    again = LoadImage(image_only=True)(str(written))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(image))
    np.testing.assert_allclose(np.asarray(again.affine), np.asarray(image.affine), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temporary file left


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    writer = AtomicNibabelWriter()
    writer.set_data_array(np.zeros((4, 4, 4), dtype=np.float32), channel_dim=None)
    writer.set_metadata({"affine": np.eye(4)})
    target = tmp_path / "labels.unknown_format"  # nibabel refuses the extension while writing
    with pytest.raises(Exception, match="unknown_format|extension|format"):
        writer.write(target)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_output_whole(tmp_path):
    target = tmp_path / "seg.nii.gz"
    for value in (1, 2):
        writer = AtomicNibabelWriter(output_dtype=np.uint8)
        writer.set_data_array(np.full((3, 3, 3), value, dtype=np.uint8), channel_dim=None)
        writer.set_metadata({"affine": np.eye(4)})
        writer.write(target)
    loaded = LoadImage(image_only=True)(str(target))
    assert set(np.unique(np.asarray(loaded)).tolist()) == {2}
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]


def test_never_writes_over_its_input(tmp_path):
    source = tmp_path / "image.nii.gz"
    writer = AtomicNibabelWriter()
    writer.set_data_array(np.ones((3, 3, 3), dtype=np.float32), channel_dim=None)
    writer.set_metadata({"affine": np.eye(4)})
    writer.write(source)
    before = source.read_bytes()
    image = LoadImage(image_only=True)(str(source))
    with pytest.raises(RuntimeError, match="over the input"):  # SaveImage wraps the writer's ValueError
        SaveImage(
            output_dir=str(tmp_path),
            output_postfix="",
            separate_folder=False,
            writer=AtomicNibabelWriter,
            print_log=False,
        )(image[None] * 2)
    assert source.read_bytes() == before


def test_labels_without_resampling_are_written_as_they_are(tmp_path):
    """With ``resample=False`` the label map reaches nibabel without a copy (MONAI's writer sends it through its
    resampler, which returns a float32 copy), and the file equals MONAI's NibabelWriter's: the same voxels, dtype
    and affine."""
    from monai.data import MetaTensor, NibabelWriter

    rng = np.random.default_rng(0)
    labels = np.asfortranarray(rng.integers(0, 3, size=(1, 23, 17, 9), dtype=np.uint8))  # (C, H, W, D), F order
    affine = np.array([[0.0, -0.8, 0.0, 12.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])
    image = MetaTensor(labels, affine=affine)
    written = {}
    for name, writer_class in (("ours", AtomicNibabelWriter), ("monai", NibabelWriter)):
        writer = writer_class(output_dtype=np.uint8)
        writer.set_data_array(image, channel_dim=0)
        writer.set_metadata(image.meta, resample=False)
        if name == "ours":
            assert np.shares_memory(np.asarray(writer.data_obj), labels)
        writer.write(tmp_path / f"{name}.nii.gz")
        written[name] = LoadImage(image_only=True)(str(tmp_path / f"{name}.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written["ours"]), labels[0])
    np.testing.assert_array_equal(np.asarray(written["ours"]), np.asarray(written["monai"]))
    np.testing.assert_allclose(np.asarray(written["ours"].affine), affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(written["ours"].affine), np.asarray(written["monai"].affine), atol=1e-6)
    assert written["ours"].dtype == written["monai"].dtype
