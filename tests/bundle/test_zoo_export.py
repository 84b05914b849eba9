"""``python -m unet_monai.bundle.export``: the model-zoo bundle it writes passes what the zoo's CI checks.

The zoo's ``ci/verify_bundle.py`` (full mode) checks the required and preferred files, the version and changelog,
the metadata against its schema (here the schema file kept in the repository, which CI cannot download), the
network's data shapes with ``verify_net_in_out`` at the default ``n=1`` and the TorchScript export with
``ckpt_export`` (loading ``models/model.ts`` too); its ``.pre-commit-config.yaml`` runs ``pretty-format-json
--autofix --no-sort-keys --indent=4``, ``end-of-file-fixer`` and ``trailing-whitespace``; its ``ci/unit_tests``
run each bundle's train, train + evaluate and inference configs through ``ConfigWorkflow`` with overrides and
``check_properties``, and training under torchrun from an exported, overridden config. Everything runs from a
folder outside the repository (the working directory is ``tmp_path``), as in the zoo's CI.

The exported bundle holds a random full-size network (the zoo's ``_produce_fake_weights`` does the same), so that
the metadata's shape formula is checked on the network it describes; the workflow tests use the session's tiny
trained checkpoint and data (``tests/bundle/conftest.py``) with overrides, as the zoo's tests override patch sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import monai.bundle
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from unet_monai.bundle import export_bundle, pretty_json
from unet_monai.bundle.export import main, overlay_base, shape_formulas
from unet_monai.networks import PaperUNet

REPO = Path(__file__).resolve().parents[2]
BUNDLE_DIR = REPO / "bundles" / "unet"
SCHEMA = BUNDLE_DIR / "metadata_schema.json"
# the session checkpoint's network and small patches (ids of train.json and inference.json)
TINY = {"features": [4, 8, 16], "val_output_patch_size": [128, 128]}
SHORT = {"epochs": 1, "iterations_per_epoch": 1, "val_interval": 1, "batch_size": 2, "output_patch_size": [36, 36]}


def config_network(config_file: Path) -> PaperUNet:
    """The ``network_def`` of a config file, as the zoo's CI instantiates it."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    return parser.get_parsed_content("network_def")


@pytest.fixture(scope="module")
def zoo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``export_bundle`` of the repository's bundle with a random network of its inference.json (as the zoo's
    ``_produce_fake_weights`` makes one): ``<tmp>/out/unet``."""
    root = tmp_path_factory.mktemp("zoo_export")
    torch.manual_seed(0)
    ckpt = root / "random_model.pt"
    torch.save(config_network(BUNDLE_DIR / "inference.json").state_dict(), ckpt)
    return export_bundle(root / "out", ckpt=ckpt)


def workflow(bundle: Path, workflow_type: str, config_files: list[str], **override: object) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` on the zoo bundle's configs, as the zoo's ``ci/unit_tests`` create it."""
    configs = bundle / "configs"
    files = [str(configs / f) for f in config_files]
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files[0] if len(files) == 1 else files,
        logging_file=str(configs / "logging.conf"),
        meta_file=str(configs / "metadata.json"),
        **override,
    )


def check_workflow(engine: ConfigWorkflow) -> None:
    """The zoo's ``ci/unit_tests/utils.check_workflow`` with ``check_properties=True``."""
    engine.initialize()
    missing = engine.check_properties()
    if missing:
        raise ValueError(f"check properties for workflow failed: {missing}")
    engine.run()
    engine.finalize()


def test_required_files(zoo_bundle: Path) -> None:
    """verify_bundle_directory's necessary and preferred files, and what this export adds: every config of the
    flat bundle (not its schema), model.ts, the README, the wheel."""
    for name in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (zoo_bundle / name).is_file(), name
    for name in ("models/model.ts", "docs/README.md", "configs/logging.conf", "configs/train.json"):
        assert (zoo_bundle / name).is_file(), name
    flat = {p.name for p in BUNDLE_DIR.glob("*.json")} - {"metadata_schema.json"}
    assert {p.name for p in (zoo_bundle / "configs").glob("*.json")} == flat
    assert (
        "Apache License" in (zoo_bundle / "LICENSE").read_text()
        and "Version 2.0" in (zoo_bundle / "LICENSE").read_text()
    )


def test_exported_configs_are_the_bundle_configs(zoo_bundle: Path) -> None:
    """Same content as bundles/unet except bundle_root, which is "." as in the zoo's bundles."""
    for exported in (zoo_bundle / "configs").glob("*.json"):
        source = json.loads((BUNDLE_DIR / exported.name).read_text())
        config = json.loads(exported.read_text())
        if "bundle_root" in source:
            assert config.pop("bundle_root") == "."
            source.pop("bundle_root")
        assert config == source, exported.name


def test_metadata_verifies_and_keeps_the_required_packages(zoo_bundle: Path) -> None:
    """verify_metadata against the repository's schema, the version in the changelog (verify_version_changes), and
    the required packages as MONAI parses them (it once replaced them with optional_packages_version); the pinned
    unet_monai is the wheel the bundle carries."""
    meta_file = zoo_bundle / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA))
    meta = json.loads(meta_file.read_text())
    assert meta["version"] in meta["changelog"]
    parser = ConfigParser()
    parser.read_meta(str(meta_file))
    required = parser.get_parsed_content("_meta_::required_packages_version")
    assert required == meta["required_packages_version"] and "unet_monai" in required
    wheels = sorted((zoo_bundle / "scripts").glob("*.whl"))
    assert [w.name for w in wheels] == [f"unet_monai-{required['unet_monai']}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
    assert {"unet_monai/__init__.py", "unet_monai/networks/unet.py", "unet_monai/bundle/export.py"} <= names
    assert "unet_monai/py.typed" in names


def test_data_shape_with_the_ci_default_n(zoo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_data_shape (verify_net_in_out, n=1) from outside the repository, and what it does not check: the
    output's spatial shape is the metadata's formula for n = 1, 2, 3."""
    monkeypatch.chdir(tmp_path)
    configs = zoo_bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        bundle_root=str(zoo_bundle),
    )
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    net = config_network(configs / "inference.json")
    for n in (1, 2, 3):
        size_in = [int(eval(s, {"n": n})) for s in image["spatial_shape"]]  # the metadata's formulas, e.g. 16*n+172
        size_out = [int(eval(s, {"n": n})) for s in pred["spatial_shape"]]
        assert list(net.output_shape(size_in)) == size_out, n


def test_torchscript_export_and_the_provided_module(
    zoo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_torchscript: ckpt_export of models/model.pt works, and models/model.ts loads and computes what the
    checkpoint computes."""
    monkeypatch.chdir(tmp_path)
    configs = zoo_bundle / "configs"
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "verify_model.ts"),
        ckpt_file=str(zoo_bundle / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        bundle_root=str(zoo_bundle),
    )
    assert (tmp_path / "verify_model.ts").is_file()
    module = torch.jit.load(str(zoo_bundle / "models" / "model.ts"))
    net = config_network(configs / "inference.json").eval()
    net.load_state_dict(torch.load(zoo_bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 1, 188, 188, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x))


def hook_format(contents: str) -> str:
    """pre-commit-hooks' pretty_format_json._get_pretty_format with the zoo's --indent=4 --no-sort-keys."""
    return json.dumps(json.loads(contents), indent="    ", ensure_ascii=True, separators=(",", ": ")) + "\n"


def test_json_and_whitespace_hooks_pass(zoo_bundle: Path) -> None:
    """pretty-format-json leaves every JSON file as it is; trailing-whitespace and end-of-file-fixer leave the
    text files as they are."""
    for path in (zoo_bundle / "configs").glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert text == hook_format(text) == pretty_json(json.loads(text)), path.name
    for path in [*(zoo_bundle / "configs").iterdir(), zoo_bundle / "docs" / "README.md", zoo_bundle / "LICENSE"]:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n"), path.name
        assert all(line == line.rstrip() for line in text.splitlines()), path.name


def test_hook_format_keeps_key_order_and_indents_by_four() -> None:
    """The comparison is the hook's: keys in their order (--no-sort-keys), 4 spaces, one newline at the end."""
    assert hook_format('{"b": 1, "a": [1, 2]}') == '{\n    "b": 1,\n    "a": [\n        1,\n        2\n    ]\n}\n'
    assert hook_format('{"b": 1}') != '{"b": 1}\n'


def test_readme_follows_the_zoo_template(zoo_bundle: Path) -> None:
    """The template's sections, the commands of the zoo's spleen README, and the wheel it installs."""
    readme = (zoo_bundle / "docs" / "README.md").read_text()
    sections = [
        "### **Authors**", "## **Model Overview**", "## **Data**", "## **Training configuration**",
        "## **Performance**", "## **MONAI Bundle Commands**", "## **System Configuration**", "## **References**",
        "# License",
    ]  # fmt: skip
    positions = [readme.find(s) for s in sections]
    assert -1 not in positions and positions == sorted(positions), dict(zip(sections, positions))
    wheel = next((zoo_bundle / "scripts").glob("*.whl")).name
    assert f"pip install scripts/{wheel}" in readme
    for entry in ("run training", "run evaluating", "run inference", "ckpt_export network_def", "torchrun"):
        assert entry in readme, entry
    assert "16*n+172" in readme and "mean_dice: 0.971" in readme
    base = overlay_base(zoo_bundle / "configs", "evaluate.json")
    assert (f"['configs/{base}','configs/evaluate.json']" if base else "configs/evaluate.json") in readme
    assert "$" not in readme.replace("$@", "")  # every template field filled


def test_cli_export_of_a_smaller_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m unet_monai.bundle.export OUT --ckpt ... --override features=[4,8,16]``: the override lands in the
    configs that have the id, the metadata's shape formulas follow the smaller network (verify_net_in_out at n=1
    passes), and model.ts is that network."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 8, 16), padding="valid")
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    assert main([str(tmp_path / "out"), "--ckpt", str(tmp_path / "tiny.pt"), "--override", "features=[4,8,16]"]) == 0
    bundle = tmp_path / "out" / "unet"
    configs = bundle / "configs"
    for name in ("train.json", "inference.json"):
        assert json.loads((configs / name).read_text())["features"] == [4, 8, 16], name
    meta = json.loads((configs / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert (fmt["inputs"]["image"]["spatial_shape"], fmt["outputs"]["pred"]["spatial_shape"]) == shape_formulas(net)
    assert fmt["inputs"]["image"]["spatial_shape"] == ["4*n+40", "4*n+40"]  # 44 -> 4: two poolings
    meta_file, config_file = str(configs / "metadata.json"), str(configs / "inference.json")
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, bundle_root=str(bundle))
    x = torch.rand(1, 1, 44, 44)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(bundle / "models" / "model.ts"))(x), net.eval()(x))


def test_export_refuses_a_training_state_and_unknown_overrides(tmp_path: Path) -> None:
    state = {"model": {"w": torch.zeros(1)}, "trainer": {"epoch": 1}}
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="ckpt must be the network's plain state dict"):
        export_bundle(tmp_path / "out", ckpt=tmp_path / "last.pt")
    with pytest.raises(FileNotFoundError, match="ckpt must be an existing checkpoint file"):
        export_bundle(tmp_path / "out", ckpt=tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"overrides must name ids .*'featurez'"):
        export_bundle(tmp_path / "out", ckpt=tmp_path / "model.pt", overrides={"featurez": [4, 8]})


def test_load_from_a_user_folder(zoo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """monai.bundle.load(workflow_type="inference") with the working directory outside the repository: the network
    of configs/inference.json with the weights of models/model.pt."""
    monkeypatch.chdir(tmp_path)
    net = monai.bundle.load(name="unet", bundle_dir=str(zoo_bundle.parent), workflow_type="inference", device="cpu")
    assert isinstance(net, PaperUNet)
    state = torch.load(zoo_bundle / "models" / "model.pt", weights_only=True)
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


@pytest.mark.slow
@pytest.mark.integration
def test_load_from_a_user_folder_with_the_carried_wheel(zoo_bundle: Path, tmp_path: Path) -> None:
    """The wheel in scripts/ installs (pip, offline, no dependencies) and is complete: monai.bundle.load(
    workflow_type="inference") in a new process that imports unet_monai from that install, with its working
    directory outside the repository, gives the network of configs/inference.json with models/model.pt's weights."""
    wheel = next((zoo_bundle / "scripts").glob("unet_monai-*.whl"))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    proc = subprocess.run(pip, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = (
        "import sys, torch, monai.bundle, unet_monai\n"
        "net = monai.bundle.load(name='unet', bundle_dir=sys.argv[1], workflow_type='inference', device='cpu')\n"
        "state = torch.load(sys.argv[2], weights_only=True)\n"
        "same = all(torch.equal(v, state[k]) for k, v in net.state_dict().items())\n"
        "print(unet_monai.__file__, type(net).__name__, len(state) == len(net.state_dict()) and same)\n"
    )
    cmd = [sys.executable, "-c", script, str(zoo_bundle.parent), str(zoo_bundle / "models" / "model.pt")]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module_file, net_type, same = proc.stdout.split()[-3:]
    assert Path(module_file).is_relative_to(site), module_file  # the wheel's unet_monai, not the repository's
    assert (net_type, same) == ("PaperUNet", "True"), proc.stdout[-2000:]


@pytest.mark.integration
def test_zoo_unit_test_train_then_evaluate(
    zoo_bundle: Path, tiny_2d_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci/unit_tests' train + evaluate case from a user's folder, both with check_properties: train.json trains and
    checkpoints under the bundle_root given; evaluate.json, read on top of the config it overlays (inference.json
    here; the zoo's spleen bundle overlays train.json), scores that checkpoint and writes its report there."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    override = {"bundle_root": str(root), "dataset_dir": str(tiny_2d_bundle / "data" / "synthetic_em_2d")}
    no_cache = {"train::dataset::cache_rate": 0.0, "validate::dataset::cache_rate": 0.0}  # as the zoo tests set
    check_workflow(workflow(zoo_bundle, "train", ["train.json"], **override, **no_cache, **TINY, **SHORT))
    assert (root / "models" / "model.pt").is_file()
    base = overlay_base(zoo_bundle / "configs", "evaluate.json")
    files = [base, "evaluate.json"] if base else ["evaluate.json"]
    check_workflow(workflow(zoo_bundle, "eval", files, **override, **TINY))
    reports = sorted(p.name for p in (root / "eval").iterdir())
    assert any(name.startswith("evaluation_") for name in reports), reports


@pytest.mark.integration
def test_zoo_unit_test_inference(
    zoo_bundle: Path, tiny_2d_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci/unit_tests' inference case (workflow type "infer", check_properties) from a user's folder: one label map
    per test image, in the output_dir given."""
    monkeypatch.chdir(tmp_path)
    dataset = tiny_2d_bundle / "data" / "synthetic_em_2d"
    out = tmp_path / "labels"
    override = {
        "bundle_root": str(tmp_path / "run"),
        "dataset_dir": str(dataset),
        "ckpt_path": str(tiny_2d_bundle / "models" / "model.pt"),
        "output_dir": str(out),
    }
    check_workflow(workflow(zoo_bundle, "infer", ["inference.json"], **override, **TINY))
    cases = sorted(p.name.replace(".nii.gz", "") for p in (dataset / "imagesTs").glob("*.nii.gz"))
    assert sorted(p.name.replace("_seg.nii.gz", "") for p in out.glob("*_seg.nii.gz")) == cases


@pytest.mark.slow
@pytest.mark.integration
def test_zoo_dist_test_torchrun_training(zoo_bundle: Path, tiny_2d_bundle: Path, tmp_path: Path) -> None:
    """ci/unit_tests' *_dist case: [train.json, multi_gpu_train.json] with the overrides written into one exported
    config (export_overrided_config), then ``torchrun --standalone --nproc_per_node=2 -m monai.bundle run
    --config_file ... --meta_file ... --logging_file ...`` (gloo on CPU) from a user's folder."""
    configs = zoo_bundle / "configs"
    root = tmp_path / "run"
    override = {"bundle_root": str(root), "dataset_dir": str(tiny_2d_bundle / "data" / "synthetic_em_2d")}
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "multi_gpu_train.json")])
    parser.update(pairs={**override, **TINY, **SHORT, "epochs": 2})
    exported = tmp_path / "train_override.json"
    ConfigParser.export_config_file(parser.config, str(exported), indent=4)
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [
        *launcher, "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", str(exported), "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(zoo_bundle)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "last.pt").is_file()
    saved = torch.load(root / "models" / "last.pt", weights_only=True)
    assert int(saved["trainer"]["iteration"]) // int(saved["trainer"]["epoch_length"]) == 2  # both epochs ran
