"""Outputs and checkpoints are written atomically: a kill mid-write or a full disk leaves no partial file under a
final name and keeps an older output intact, with an error that names the file. Real child processes."""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

WRITE_LARGE_NIFTI = """
import sys
import numpy as np
from unet_monai.io import AtomicNibabelWriter

array = np.random.default_rng(0).random((192, 192, 192), dtype=np.float32)  # 27 MiB: seconds of gzip
writer = AtomicNibabelWriter()
writer.set_data_array(array, channel_dim=None)
writer.set_metadata({"affine": np.eye(4)})
writer.write(sys.argv[1])
print("finished", flush=True)
"""

# Every writer of the project under a 256 KiB file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with
# EFBIG as on a full disk, ENOSPC); prints what each raised, as JSON.
WRITE_UNDER_A_SIZE_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.transforms import SaveImage
from unet_monai.handlers import EpochCheckpointSaver
from unet_monai.io import AtomicNibabelWriter

out = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
big = np.random.default_rng(0).random((64, 64, 64), dtype=np.float32)  # 1 MiB, about as much gzipped


def nifti():
    writer = AtomicNibabelWriter()
    writer.set_data_array(big, channel_dim=None)
    writer.set_metadata({"affine": np.eye(4)})
    writer.write(out / "seg.nii.gz")


def save_image():  # the bundle's path: SaveImaged with our writer
    image = MetaTensor(big[None], meta={"filename_or_obj": "case.nii.gz"})
    SaveImage(output_dir=out, output_postfix="seg", separate_folder=False, writer=AtomicNibabelWriter,
              print_log=False)(image)


def checkpoint():
    engine = Engine(lambda engine, batch: None)
    engine.state.epoch = 1
    EpochCheckpointSaver(out / "last.pt", {"model": torch.nn.Linear(512, 512)})(engine)


results = {}
for name, write in [("nifti", nifti), ("save_image", save_image), ("checkpoint", checkpoint)]:
    try:
        write()
        results[name] = None
    except Exception as err:
        results[name] = [type(err).__name__, getattr(err, "errno", None), str(err)]
print(json.dumps(results))
"""


def older_nifti(path: Path) -> bytes:
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 7, np.uint8), np.eye(4)), str(path))
    return path.read_bytes()


@pytest.mark.integration
def test_sigkill_while_writing_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "seg.nii.gz"
    before = older_nifti(target)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_LARGE_NIFTI, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    deadline = time.time() + 600  # generous: the machine may be busy
    while time.time() < deadline:  # kill once the temporary file holds data: mid-write
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".seg.nii.gz.") and p.stat().st_size > 0]
        if partial:
            break
        assert child.poll() is None, "the writer ended before it could be killed"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL and "finished" not in (child.stdout.read() if child.stdout else "")
    assert target.read_bytes() == before  # the older output, whole
    assert np.asarray(nib.load(target).dataobj).max() == 7
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(name.startswith(".seg.nii.gz.") for name in leftovers)  # hidden temporary only


@pytest.mark.integration
def test_full_disk_names_the_file_and_keeps_older_outputs(tmp_path: Path) -> None:
    before = {name: older_nifti(tmp_path / name) for name in ("seg.nii.gz", "case_seg.nii.gz")}
    (tmp_path / "last.pt").write_bytes(b"older checkpoint")
    before["last.pt"] = b"older checkpoint"
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_A_SIZE_LIMIT, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])

    kind, code, message = results["nifti"]
    assert (kind, code) == ("OSError", errno.EFBIG)
    assert f"cannot write {tmp_path / 'seg.nii.gz'}: File too large (the older file was kept" in message

    kind, _, message = results["save_image"]  # MONAI's SaveImage wraps the writer's error, with its text
    assert kind == "RuntimeError" and f"cannot write {tmp_path / 'case_seg.nii.gz'}: File too large" in message

    kind, _, message = results["checkpoint"]  # torch.save reports it as "unexpected pos"; atomic_path names the file
    assert kind == "RuntimeError" and f"cannot write {tmp_path / 'last.pt'}" in message

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # intact, and no temporary left


WRITE_CALLS = {"save", "save_as", "write_text", "write_bytes", "dump", "savefig", "to_csv", "imwrite"}


def unprotected_writes(source: str) -> list[int]:
    """Line numbers of file writes (``torch.save``, ``nib.save``, ``.save_as``, ``.write_text``, ``open(.., 'w')``,
    ...) that are not inside a ``with`` block that also enters ``atomic_path``."""
    tree = ast.parse(source)
    protected: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "atomic_path"
            for item in node.items
        ):
            protected.update(id(n) for n in ast.walk(node))
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in protected:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        writes = name in WRITE_CALLS
        if name == "open" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
            writes = any(c in str(node.args[1].value) for c in "wax")
        if writes:
            lines.append(node.lineno)
    return lines


def test_every_write_in_the_library_goes_through_atomic_path() -> None:
    """A guard for new code: checkpoints, outputs, data and reports are all written via ``atomic_path``."""
    found = {
        str(path.relative_to(REPO)): lines
        for path in sorted((REPO / "unet_monai").rglob("*.py"))
        if (lines := unprotected_writes(path.read_text()))
    }
    assert not found, f"writes outside atomic_path (file: lines): {found}"


def test_the_guard_sees_a_bare_write() -> None:
    assert unprotected_writes("import torch\ntorch.save({}, 'x.pt')\n") == [2]
    assert unprotected_writes("with open('x', 'w') as f:\n    f.write('')\n") == [1]
    assert unprotected_writes("with atomic_path(p) as tmp:\n    torch.save({}, tmp)\n") == []
    assert unprotected_writes("with atomic_path(p) as tmp, open(tmp, 'w') as f:\n    json.dump({}, f)\n") == []


def test_outputs_get_the_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    """MONAI's CheckpointSaver avoids atomic writes because temporary files are 0600; ours follow the umask."""
    from unet_monai.io import atomic_path

    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o640
