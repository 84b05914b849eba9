"""metadata.json against the schema kept in the repository, through MONAI's own ``verify_metadata``: once through
the CLI (``python -m monai.bundle verify_metadata``), and for the broken variants through the same function in this
process (each CLI start costs about 10 s of imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import verify_metadata

REPO = Path(__file__).resolve().parents[2]
META = REPO / "bundles" / "unet" / "metadata.json"
SCHEMA = REPO / "bundles" / "unet" / "metadata_schema.json"


def verify(meta_file: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(meta_file)]
    return subprocess.run([*cmd, "--filepath", str(SCHEMA)], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_metadata_verifies_against_the_repository_schema(tmp_path: Path) -> None:
    proc = verify(META)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert "skipped downloading" in proc.stdout + proc.stderr  # the schema in the repository, nothing fetched


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("task",), None),  # a mandatory key removed
        (("version",), "0.3"),  # not a semantic version
        (("network_data_format", "inputs", "image", "spatial_shape"), ["16*n+124", "import os"]),
        (("network_data_format", "outputs", "pred", "num_channels"), 0),
    ],
)
def test_broken_metadata_is_refused(tmp_path: Path, path: tuple[str, ...], value: object) -> None:
    meta = json.loads(META.read_text())
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="Failed validating"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


def test_metadata_is_consistent_with_itself() -> None:
    """What a JSON schema cannot say: the current version has a changelog entry (the newest), and every tensor
    names each of its channels."""
    meta = json.loads(META.read_text())
    assert next(iter(meta["changelog"])) == meta["version"]
    for group in ("inputs", "outputs"):
        for name, tensor in meta["network_data_format"][group].items():
            assert sorted(map(int, tensor["channel_def"])) == list(range(tensor["num_channels"])), name
