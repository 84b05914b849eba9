"""Untrusted inputs: pickled checkpoints are refused, output names cannot leave the output folder, and no patient
data (PatientName, PatientID, PatientBirthDate) reaches the logs of a real inference run."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from unet_monai.io import SaveDicomSegd, contained_path, safe_filename

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "unet"


class Exploit:
    """Unpickling this creates ``path``: any code could run in its place."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundle configs name each other relative to the repository root (``%bundles/unet/train.json::...``)."""
    monkeypatch.chdir(REPO)


def parser_for(config_files: list[str], **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in config_files])
    for key, value in overrides.items():
        parser[key] = value
    return parser


# ---------------------------------------------------------------- checkpoints


def test_the_exploit_is_real(tmp_path: Path) -> None:
    """Loaded with pickle (weights_only=False), the checkpoint runs its payload."""
    torch.save({"model": Exploit(tmp_path / "ran")}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_bundle_checkpoint_loader_refuses_a_pickled_payload(tmp_path: Path, in_repo: None) -> None:
    """inference.json's CheckpointLoader (MONAI 1.6: torch.load(weights_only=True)) refuses the file unrun."""
    marker = tmp_path / "ran"
    torch.save({"model": Exploit(marker)}, tmp_path / "evil.pt")
    parser = parser_for(["bundles/unet/inference.json"], bundle_root=str(tmp_path), ckpt_path=str(tmp_path / "evil.pt"))
    parser["features"] = [4, 8]
    loader = parser.get_parsed_content("handlers#0")
    assert type(loader).__name__ == "CheckpointLoader"
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        loader(Engine(lambda engine, batch: None))
    assert not marker.exists()


def walk(node: object) -> Iterator[object]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from walk(child)


def test_every_bundle_config_loads_checkpoints_through_that_loader() -> None:
    """No config loads a checkpoint another way (its own torch.load, or weights_only=False)."""
    for config in sorted(BUNDLE.glob("*.json")):
        for node in walk(json.loads(config.read_text())):
            target = str(node.get("_target_", "")) if isinstance(node, dict) else ""
            if "Load" in target and "Checkpoint" in target:
                assert target in ("CheckpointLoader", "monai.handlers.CheckpointLoader"), f"{config.name}: {target}"
            if isinstance(node, str):
                assert "torch.load" not in node and "weights_only" not in node, f"{config.name}: {node}"
    for module in (REPO / "unet_monai").rglob("*.py"):
        assert "torch.load(" not in module.read_text() or "weights_only=True" in module.read_text(), module


# ---------------------------------------------------------------- output names


EVIL_SOURCES = ["../../escape.nii.gz", "/elsewhere/../../escape.nii.gz", "..", "a/../../../b.nii.gz", "x\ny.nii.gz"]


@pytest.mark.parametrize("source", EVIL_SOURCES, ids=["dotdot", "absolute", "bare-dotdot", "nested", "newline"])
def test_inference_outputs_stay_in_the_output_folder(tmp_path: Path, in_repo: None, source: str) -> None:
    """inference.json's SaveImaged names outputs after the input's base name only (no data_root_dir)."""
    out = tmp_path / "a" / "b" / "out"
    parser = parser_for(["bundles/unet/inference.json"], output_dir=str(out), label_names={1: "x"}, dicom_seg=False)
    postprocessing = parser.get_parsed_content("postprocessing")
    pred = MetaTensor(torch.zeros(1, 4, 4, 4, dtype=torch.uint8), meta={"filename_or_obj": source})
    postprocessing({"pred": pred})
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1 and written[0].parent == out


def test_dicom_seg_name_ignores_tags_and_stays_inside(
    tmp_path: Path, dicom_series: Callable[..., list[Path]], dciodvfy: Callable[[Path], list[str]]
) -> None:
    """A SeriesDescription or PatientID with '/' and '..' never reaches a file name; a source given as
    '<folder>/sub/..' gives a SEG inside the output folder."""
    pytest.importorskip("highdicom")
    series = tmp_path / "series"
    dicom_series(series, description="../../evil/name", PatientID="../../../id")
    (series / "sub").mkdir()
    label = np.zeros((1, 10, 12, 4), dtype=np.uint8)
    label[0, 2:6, 3:7, 1:3] = 1
    out = tmp_path / "deep" / "out"
    for source in (series, series / "sub" / ".."):
        SaveDicomSegd("pred", out, {1: "lesion"})({"pred": MetaTensor(label, meta={"filename_or_obj": str(source)})})
    for seg in (out / "_seg.dcm", out / "series_seg.dcm"):
        dciodvfy(seg)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.dcm") if "series" not in p.parts) == [
        "deep/out/_seg.dcm",
        "deep/out/series_seg.dcm",
    ]


@pytest.mark.parametrize(
    "name, safe",
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "output"),
        (".hidden", "hidden"),
        ("a\x00b\nc", "a_b_c"),
        ("C:\\x", "C__x"),
        ("ok_name-1.nii.gz", "ok_name-1.nii.gz"),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_contained_path_refuses_escapes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)
    assert contained_path(out, "seg.nii.gz") == (out / "seg.nii.gz").resolve()
    for name in ("../x", "/etc/passwd", "link/x", "", "."):
        with pytest.raises(ValueError, match="must stay inside the output folder"):
            contained_path(out, name)


# ---------------------------------------------------------------- patient data in logs


@pytest.mark.integration
def test_inference_on_dicom_logs_no_patient_data(
    tmp_path: Path,
    in_repo: None,
    dicom_series: Callable[..., list[Path]],
    phi: dict[str, str],
    dciodvfy: Callable[[Path], list[str]],
) -> None:
    """The real CLI on a DICOM folder with fake PHI, writing NIfTI and DICOM SEG: PHI in no output line, nor
    in the NIfTI file."""
    pytest.importorskip("highdicom")
    series = tmp_path / "scan"
    dicom_series(series, slices=6, rows=24, columns=20)
    configs = ["bundles/unet/inference.json", "bundles/unet/train_3d.json"]
    state = parser_for(configs, features=[2, 4]).get_parsed_content("network_def").state_dict()
    state["head.bias"] = torch.tensor([0.0, 50.0])  # foreground everywhere: the SEG writer runs too
    torch.save(state, tmp_path / "model.pt")
    manifest = tmp_path / "labels.json"
    manifest.write_text(json.dumps({"labels": {"1": "membrane"}, "test": ["scan"]}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(configs)]
    cmd += ["--bundle_root", str(tmp_path), "--features", "[2,4]", "--val_output_patch_size", "[48,48,48]"]
    cmd += ["--input", str(series), "--manifest", str(manifest), "--ckpt_path", str(tmp_path / "model.pt")]
    cmd += ["--dicom_seg", "True", "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    nifti = tmp_path / "out" / "scan_seg.nii.gz"
    assert nifti.is_file() and (tmp_path / "out" / "scan_seg.dcm").is_file()
    dciodvfy(tmp_path / "out" / "scan_seg.dcm")
    for value in phi.values():
        assert value not in log
        assert value.encode() not in gzip.decompress(nifti.read_bytes())
