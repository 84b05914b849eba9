"""metadata.json against the schema kept in the repository, through MONAI's own ``verify_metadata``: once through
the CLI (``python -m monai.bundle verify_metadata``), and for the broken variants through the same function in this
process (each CLI start costs about 10 s of imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, verify_metadata

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
        (("network_data_format", "inputs", "image", "spatial_shape"), ["16*n+172", "import os"]),
        (("network_data_format", "outputs", "pred", "num_channels"), 0),
        (("optional_packages_version",), {"highdicom": "0.28.2"}),  # MONAI would drop the required packages
        (("required_packages_version", "unet_monai"), None),  # the package the configs import
    ],
    ids=["no task", "version", "shape expression", "channels", "optional packages", "no unet_monai"],
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


def test_monai_keeps_the_required_packages(tmp_path: Path) -> None:
    """MONAI's parsed metadata has every required package; with ``optional_packages_version`` (its deprecated name
    of ``required_packages_version``) the same parse would replace them, which is why the schema refuses that key."""
    meta = json.loads(META.read_text())
    parser = ConfigParser()
    parser.read_meta(str(META))
    assert parser.get_parsed_content("_meta_::required_packages_version") == meta["required_packages_version"]
    with_optional = tmp_path / "metadata.json"
    with_optional.write_text(json.dumps({**meta, "optional_packages_version": {"highdicom": "0.28.2"}}))
    parser = ConfigParser()
    with pytest.warns(UserWarning, match="optional_packages_version"):
        parser.read_meta(str(with_optional))
    assert parser.get_parsed_content("_meta_::required_packages_version") == {"highdicom": "0.28.2"}


def test_spatial_shapes_fit_the_network_from_n_1() -> None:
    """The shape formulas hold for the bundle's network from n = 1, the default of the model zoo's
    ``verify_net_in_out``: each input size is valid and gives the stated output size."""
    meta = json.loads(META.read_text())
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "unet" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    for n in (1, 2, 3, 4):
        size_in = [int(eval(s, {"n": n})) for s in image["spatial_shape"]]  # the metadata's own formulas
        size_out = [int(eval(s, {"n": n})) for s in pred["spatial_shape"]]
        assert list(net.output_shape(size_in)) == size_out, n
    below = [int(eval(s, {"n": 0})) for s in image["spatial_shape"]]
    with pytest.raises(ValueError):  # n = 0 is below the smallest valid input: the formula starts at the edge
        net.output_shape(below)
