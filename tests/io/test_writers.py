"""AtomicNibabelWriter: round trips on the real spleen CT, and no partial file under the final name; SaveLabelsd's
write errors (a read-only folder, a file in the way, a size limit, a full and a read-only file system) name the file
and the cause."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, SaveImage
from PIL import Image

from unet_monai.io import AtomicNibabelWriter, SaveLabelsd, label_suffix

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


# ------------------------------------------------------- output-side faults, as the bundle's SaveLabelsd meets them


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as user ``nobody`` when the tests run as root (root's CAP_DAC_OVERRIDE ignores a folder's
    mode bits); as another user, the mode bits already apply."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def a_label(source: str = "case.nii.gz") -> MetaTensor:
    return MetaTensor(torch.ones(1, 6, 5, dtype=torch.uint8), affine=torch.eye(4), meta={"filename_or_obj": source})


@pytest.mark.parametrize("source", ["case.nii.gz", "case.png", "case.tif"], ids=["nifti", "png", "tiff"])
def test_read_only_output_folder_is_reported_with_the_file_and_the_cause(source: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="unet_monai_ro_"))  # under /tmp: pytest's tmp_path is private to root
    try:
        base.chmod(0o755)
        out = base / "out"
        out.mkdir(mode=0o555)
        out.chmod(0o555)  # r-x: no new files
        label = a_label(source)
        label.meta["spatial_shape"] = np.array([6, 5])
        with unprivileged(), pytest.raises(OSError) as info:
            SaveLabelsd("pred", output_dir=out)({"pred": label})
        target = out / f"case_seg{label_suffix(source)}"
        assert info.value.errno == errno.EACCES
        assert f"cannot write {target}: Permission denied (nothing was written under that name" in str(info.value)
        assert "suitable writer" not in str(info.value)
        assert list(out.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_a_file_where_the_output_folder_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("not a folder")
    out = tmp_path / "results" / "labels"
    with pytest.raises(OSError) as info:
        SaveLabelsd("pred", output_dir=out)({"pred": a_label()})
    message = str(info.value)
    assert f"cannot write {out / 'case_seg.nii.gz'}: {tmp_path / 'results'} is a file, not a folder" in message
    assert "suitable writer" not in message


def test_a_file_size_limit_fails_the_write_and_keeps_the_older_label(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the write fail with EFBIG, as a full disk fails with ENOSPC (the same code path);
    the older label stays whole and no temporary file is left."""
    rng = np.random.default_rng(0)
    older = tmp_path / "case_seg.png"
    Image.fromarray(np.zeros((5, 6), dtype=np.uint8)).save(older)
    before = older.read_bytes()
    noise = torch.as_tensor(rng.integers(0, 255, size=(1, 256, 256), dtype=np.uint8))  # 64 KiB, incompressible
    label = MetaTensor(noise, meta={"filename_or_obj": "case.png", "spatial_shape": np.array([256, 256])})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # without this the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
    try:
        with pytest.raises(OSError) as info:
            SaveLabelsd("pred", output_dir=tmp_path)({"pred": label})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert info.value.errno == errno.EFBIG
    assert f"cannot write {older}: File too large (the older file was kept" in str(info.value)
    assert older.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [older.name]


# A full disk (ENOSPC) and a read-only file system (EROFS) for real: tiny tmpfs mounts in a private mount namespace
# (``unshare -m``, root only), gone with the process. Prints what each write raised, as JSON.
ON_TINY_MOUNTS = """
import json, logging, sys
from pathlib import Path
import numpy as np
import torch
from monai.data import MetaTensor
from unet_monai.handlers import CaseFailureReport
from unet_monai.io import SaveLabelsd

full, read_only = Path(sys.argv[1]), Path(sys.argv[2])
results = {}


def label(shape, seed=0):
    values = np.random.default_rng(seed).integers(0, 255, size=(1, *shape), dtype=np.uint8)  # incompressible
    return MetaTensor(torch.as_tensor(values), meta={"filename_or_obj": "case.png", "spatial_shape": np.array(shape)})


def attempt(name, write):
    try:
        write()
        results[name] = None
    except OSError as err:
        results[name] = [type(err).__name__, err.errno, str(err)]


SaveLabelsd("pred", output_dir=full)({"pred": label((8, 8))})  # an older label, 1 KiB
results["older"] = (full / "case_seg.png").read_bytes().hex()
attempt("no_space", lambda: SaveLabelsd("pred", output_dir=full)({"pred": label((256, 256))}))  # 64 KiB on 64 KiB
results["after"] = (full / "case_seg.png").read_bytes().hex()
results["left"] = sorted(p.name for p in full.iterdir())
attempt("read_only", lambda: SaveLabelsd("pred", output_dir=read_only)({"pred": label((8, 8))}))
report = CaseFailureReport(read_only / "failures.csv")
report.add("case1", "loading", "ValueError: x")  # must not raise
results["report"] = report.write_error
print(json.dumps(results))
"""


def _can_mount() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow  # a child process that imports torch and MONAI (about 13 s here); the in-process tests above
@pytest.mark.integration  # cover the same code path with EACCES, ENOTDIR and EFBIG
@pytest.mark.skipif(not _can_mount(), reason="needs root and `unshare -m` for a private tmpfs (a real full disk)")
def test_full_and_read_only_file_systems_are_reported_as_such(tmp_path: Path) -> None:
    full, read_only = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    read_only.mkdir()
    mounts = 'mount -t tmpfs -o size=64k tmpfs "$1" && mount -t tmpfs -o ro tmpfs "$2" && exec "$3" -c "$4" "$1" "$2"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", mounts, "sh", str(full), str(read_only), sys.executable, ON_TINY_MOUNTS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    kind, code, message = results["no_space"]
    assert code == errno.ENOSPC, message
    assert f"cannot write {full / 'case_seg.png'}: No space left on device (the older file was kept" in message
    assert results["after"] == results["older"] and results["left"] == ["case_seg.png"]  # no partial file
    kind, code, message = results["read_only"]
    assert code == errno.EROFS, message
    assert f"cannot write {read_only / 'case_seg.png'}: Read-only file system" in message
    assert f"cannot write {read_only / 'failures.csv'}: Read-only file system" in results["report"]
    assert not list(full.iterdir()) and not list(read_only.iterdir())  # the mounts were private to the child
