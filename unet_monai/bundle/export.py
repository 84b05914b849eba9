"""Write the repository's flat bundle (``bundles/unet/``) as a MONAI model-zoo bundle, with one command::

    python -m unet_monai.bundle.export OUT_DIR [--ckpt PATH] [--bundle_dir bundles/unet] [--override ID=VALUE ...]

``OUT_DIR/<name>/`` (``name`` from ``metadata.json``) gets the zoo layout that its ``ci/verify_bundle.py`` checks:

- ``configs/``: every ``*.json`` of the bundle except ``metadata_schema.json`` (``metadata.json`` included) and
  ``logging.conf``, written as the zoo's ``pretty-format-json`` hook wants them (``--indent=4 --no-sort-keys``,
  ASCII, one newline at the end); a plain-path ``bundle_root`` becomes ``"."``, the zoo's convention;
- ``models/model.pt`` (the checkpoint, a plain state dict) and ``models/model.ts`` (its TorchScript, written by
  MONAI's ``ckpt_export`` on the exported ``configs/inference.json``);
- ``docs/README.md`` in the zoo template's sections (:mod:`unet_monai.bundle.readme_template`);
- ``LICENSE``;
- ``scripts/unet_monai-<version>-py3-none-any.whl``: the package the configs import, built from this repository
  (``pip install <bundle>/scripts/unet_monai-<version>-py3-none-any.whl``); ``required_packages_version`` names
  the same version.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unet_monai.bundle.readme_template import README_TEMPLATE
from unet_monai.io.atomic import atomic_path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE_DIR = REPO_ROOT / "bundles" / "unet"
NOT_EXPORTED = {"metadata_schema.json"}  # the repository's own schema; the zoo downloads the one metadata names
WHEEL_DIR = "scripts"
# a "%file::id" macro: MONAI opens that file relative to the working directory, which breaks outside the repository
FILE_MACRO = re.compile(r"%([^%@$:'\"\s]+\.(?:json|ya?ml))::")


def pretty_json(obj: Any) -> str:
    """``obj`` as the model zoo's ``pretty-format-json`` hook (``--indent=4 --no-sort-keys``) writes it: 4-space
    indents, keys in their order, non-ASCII characters escaped, ``", "``/``": "`` separators, one final newline.

    Args:
        obj: a JSON value (the parsed config, key order kept).

    Returns:
        The text the hook compares a file with.
    """
    return json.dumps(obj, indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"


def _parse_value(text: str) -> Any:
    """A command-line override's value: JSON where it parses (numbers, lists, true/null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> set[str]:
    """Set each override's id in ``config`` where that id exists; nested ids are separated by ``::`` (or ``#``).

    Args:
        config: a config file's content, changed in place.
        overrides: id -> new value.

    Returns:
        The ids that existed in ``config`` and were set.
    """
    done = set()
    for key, value in overrides.items():
        parts = key.replace("#", "::").split("::")
        node: Any = config
        for part in parts[:-1]:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        else:
            last = parts[-1]
            if isinstance(node, dict) and last in node:
                node[last] = value
                done.add(key)
            elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = value
                done.add(key)
    return done


def _file_macros(obj: Any) -> set[str]:
    """The files that ``%file::id`` macros in ``obj`` name."""
    if isinstance(obj, str):
        return set(FILE_MACRO.findall(obj))
    if isinstance(obj, dict):
        return set().union(*(_file_macros(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_file_macros(v) for v in obj)) if obj else set()
    return set()


def export_configs(bundle_dir: Path, configs_dir: Path, overrides: Mapping[str, Any] | None = None) -> list[Path]:
    """Write the bundle's configs into ``configs_dir`` in the zoo's JSON format, with ``overrides`` applied.

    A top-level ``bundle_root`` that is a plain path (``"bundles/unet"``, relative to the repository) becomes
    ``"."`` (the zoo's convention: commands run from the bundle folder, or pass ``--bundle_root``). Configs that
    still reference other files through ``%file::id`` macros are exported with a ``RuntimeWarning``: MONAI
    resolves those paths against the working directory.

    Args:
        bundle_dir: the flat bundle (``bundles/unet``): its ``*.json`` (less ``metadata_schema.json``) and
            ``logging.conf``.
        configs_dir: the zoo bundle's ``configs/`` folder, created.
        overrides: config id -> value, set in every config file that has the id (e.g. ``{"features": [4, 8, 16]}``
            for a checkpoint of a smaller network).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: when ``bundle_dir`` has no ``metadata.json`` or ``logging.conf``.
        ValueError: when an override's id is in none of the config files.
    """
    overrides = dict(overrides or {})
    for required in ("metadata.json", "logging.conf"):
        if not (bundle_dir / required).is_file():
            raise FileNotFoundError(f"bundle_dir must hold {required}, got {bundle_dir} without it.")
    configs_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for src in sorted(bundle_dir.glob("*.json")):
        if src.name in NOT_EXPORTED:
            continue
        config = json.loads(src.read_text(encoding="utf-8"))
        if src.name != "metadata.json":
            used |= apply_overrides(config, overrides)
            root = config.get("bundle_root")
            if isinstance(root, str) and root and root[0] not in "$@%" and root != ".":
                config["bundle_root"] = "."
            macros = _file_macros(config)
            if macros:
                warnings.warn(
                    f"{src.name} references {sorted(macros)} through %file::id macros, which MONAI opens relative "
                    "to the working directory: the exported bundle works only from the repository root.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        target = configs_dir / src.name
        with atomic_path(target) as tmp:
            tmp.write_text(pretty_json(config), encoding="utf-8")
        written.append(target)
    unknown = sorted(set(overrides) - used)
    if unknown:
        raise ValueError(f"overrides must name ids of the bundle's configs, got {unknown} that none of them has.")
    shutil.copyfile(bundle_dir / "logging.conf", configs_dir / "logging.conf")
    return [*written, configs_dir / "logging.conf"]


def build_wheel(dest: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Build the ``unet_monai`` wheel of ``repo_root`` into ``dest``, offline (``pip wheel --no-deps
    --no-build-isolation --no-index``, with the setuptools of this environment).

    The sources (``pyproject.toml``, ``README.md``, ``unet_monai/``) are copied to a temporary folder first, so that
    the build writes no ``build/`` or ``*.egg-info`` into the repository.

    Args:
        dest: folder for the wheel, created.
        repo_root: the repository (the folder with ``pyproject.toml``).

    Returns:
        The wheel file.

    Raises:
        FileNotFoundError: when ``repo_root`` has no ``pyproject.toml``.
        RuntimeError: when pip fails (its output in the message) or writes no single wheel.
    """
    if not (repo_root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"repo_root must hold pyproject.toml to build the wheel, got {repo_root}.")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unet_monai_wheel_") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (repo_root / name).is_file():
                shutil.copyfile(repo_root / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(repo_root / "unet_monai", src / "unet_monai", ignore=ignore)
        out = Path(tmp) / "wheel"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        proc = subprocess.run([*cmd, "-w", str(out), str(src)], capture_output=True, text=True)
        wheels = sorted(out.glob("unet_monai-*.whl")) if out.is_dir() else []
        if proc.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"pip wheel must build one unet_monai wheel, got {wheels}:\n{proc.stdout}{proc.stderr}")
        target = dest / wheels[0].name
        shutil.copyfile(wheels[0], target)
    return target


def shape_formulas(net: Any) -> tuple[list[str], list[str]]:
    """``network_data_format`` spatial shapes of a valid-padding U-Net, valid from ``n = 1`` (the zoo CI's default):
    per axis, input ``"<step>*n+<smallest - step>"`` and the output size it gives, in voxels.

    Args:
        net: a :class:`unet_monai.networks.PaperUNet` (``pool_grid``, ``min_input_shape``, ``output_shape``).

    Returns:
        The input and the output formulas, one string per spatial axis (e.g. ``"16*n+172"``, ``"16*n-12"``).
    """
    smallest = net.min_input_shape
    out = net.output_shape(smallest)
    steps = net.pool_grid

    def formula(step: int, size: int) -> str:
        return f"{step}*n{size - step:+d}" if size != step else f"{step}*n"

    return [formula(a, b) for a, b in zip(steps, smallest)], [formula(a, b) for a, b in zip(steps, out)]


def _match_network(configs: Path, target: Path) -> None:
    """Write the exported network's shape formulas into the exported metadata where they differ (an override of
    ``features`` changes them); the repository's own metadata is checked against its network by the tests."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser["bundle_root"] = str(target)
    net = parser.get_parsed_content("network_def")
    if not all(hasattr(net, name) for name in ("pool_grid", "min_input_shape", "output_shape")):
        return
    meta_file = configs / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    fmt = meta["network_data_format"]
    image, pred = next(iter(fmt["inputs"].values())), next(iter(fmt["outputs"].values()))
    if len(image["spatial_shape"]) != net.spatial_dims:
        return
    inputs, outputs = shape_formulas(net)
    if (image["spatial_shape"], pred["spatial_shape"]) != (inputs, outputs):
        logger.info("network_data_format of the exported network: %s -> %s", inputs, outputs)
        image["spatial_shape"], pred["spatial_shape"] = inputs, outputs
        with atomic_path(meta_file) as tmp:
            tmp.write_text(pretty_json(meta), encoding="utf-8")


def _check_checkpoint(ckpt: Path) -> None:
    """Refuse a missing checkpoint and a training state (``last.pt``) instead of the network's state dict."""
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"ckpt must be an existing checkpoint file, got {ckpt}: train first (python -m monai.bundle run "
            "training --config_file bundles/unet/train.json writes bundles/unet/models/model.pt) or pass --ckpt."
        )
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"ckpt must be the network's plain state dict (models/model.pt), got {ckpt} with {keys}.")


def _references(obj: Any) -> set[str]:
    """Top-level ids that ``@id`` references in ``obj`` name."""
    if isinstance(obj, str):
        return {ref.replace("#", "::").split("::")[0] for ref in re.findall(r"@([\w:#]+)", obj)}
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    return set().union(*(_references(v) for v in values)) if values else set()


def overlay_base(
    configs_dir: Path, overlay: str, candidates: Sequence[str] = ("inference.json", "train.json")
) -> str | None:
    """The config file that ``overlay`` is read on top of: the first of ``candidates`` that defines every top-level
    id the overlay references but does not define; None when the overlay stands alone (or no candidate fits).

    Args:
        configs_dir: folder of the config files.
        overlay: file name of the overlay, e.g. ``"evaluate.json"``.
        candidates: file names to try, in order.
    """
    config = json.loads((configs_dir / overlay).read_text(encoding="utf-8"))
    defined = {key.replace("#", "::").split("::")[0] for key in config}
    missing = _references(config) - defined
    if not missing:
        return None
    for name in candidates:
        path = configs_dir / name
        if name != overlay and path.is_file():
            base = {key.split("::")[0] for key in json.loads(path.read_text(encoding="utf-8"))}
            if missing <= base:
                return name
    return None


def _literal(parser: Any, key: str) -> str:
    """A train.json value for the README, resolved by MONAI's parser where it can be without side effects (literals
    and expressions of literals), else a pointer to the config."""
    config = parser.get()
    if key in config:
        value = config[key]
        if isinstance(value, str) and value.startswith("$"):
            try:
                value = parser.get_parsed_content(key)
            except Exception:  # an expression that needs more than literals: name the id instead
                value = None
        if value is not None and not (isinstance(value, str) and value[:1] in "@%"):
            return f"`{json.dumps(value)}`"
    return f"`{key}` (see `configs/train.json`)"


def render_readme(configs_dir: Path, wheel_name: str) -> str:
    """``docs/README.md`` of the exported bundle: the zoo template filled from ``metadata.json`` and the configs.

    Args:
        configs_dir: the exported ``configs/``.
        wheel_name: file name of the ``unet_monai`` wheel in ``scripts/``.

    Returns:
        The README text (no trailing spaces, one final newline: the zoo's whitespace hooks pass).
    """
    from monai.bundle import ConfigParser

    from unet_monai.networks import PaperUNet

    meta = json.loads((configs_dir / "metadata.json").read_text(encoding="utf-8"))
    train = json.loads((configs_dir / "train.json").read_text(encoding="utf-8"))
    parser = ConfigParser(train)
    fmt = meta["network_data_format"]
    image, pred = next(iter(fmt["inputs"].values())), next(iter(fmt["outputs"].values()))
    features = train.get("features", [32, 64, 128, 256, 512])
    context = PaperUNet(spatial_dims=2, in_channels=1, out_channels=2, features=features).context
    base = overlay_base(configs_dir, "evaluate.json") if (configs_dir / "evaluate.json").is_file() else None
    evaluate_config = f"\"['configs/{base}','configs/evaluate.json']\"" if base else "configs/evaluate.json"
    overlays = sorted(p.name for p in configs_dir.glob("*.json") if p.name not in {"metadata.json", "train.json"})
    metrics = meta.get("eval_metrics", {})
    performance = (
        "; ".join(f"{k}: {v}" for k, v in metrics.items())
        + " (foreground class, on the validation images of the synthetic data set, after the default training: "
        "about 2 minutes on a CPU)."
        if metrics
        else "Not measured yet."
    )
    required = meta["required_packages_version"]
    text = README_TEMPLATE.substitute(
        title=f"{meta['name']}: paper-style U-Net (version {meta['version']})",
        name=meta["name"],
        authors=meta["authors"],
        modality=image.get("modality", "any"),
        description=meta["description"],
        task=meta["task"].rstrip("."),
        context=json.dumps(context),
        features=json.dumps(features),
        input_shape=" x ".join(map(str, image["spatial_shape"])),
        output_shape=" x ".join(map(str, pred["spatial_shape"])),
        data_source=meta.get("data_source", "See configs/train.json").rstrip("."),
        image_classes=meta.get("image_classes", "see metadata.json"),
        data_type=meta.get("data_type", "see metadata.json"),
        label_classes=meta.get("label_classes", "see metadata.json"),
        epochs=_literal(parser, "epochs"),
        iterations_per_epoch=_literal(parser, "iterations_per_epoch"),
        batch_size=_literal(parser, "batch_size"),
        output_patch_size=_literal(parser, "output_patch_size"),
        learning_rate=_literal(parser, "learning_rate"),
        val_interval=_literal(parser, "val_interval"),
        overlays=", ".join(f"`{o}`" for o in overlays),
        input_channels=image["num_channels"],
        input_channel_def=", ".join(f"{k} = {v}" for k, v in image["channel_def"].items()),
        input_dtype=image["dtype"],
        output_channels=pred["num_channels"],
        output_channel_def=", ".join(f"{k} = {v}" for k, v in pred["channel_def"].items()),
        output_dtype=pred["dtype"],
        pred_classes=meta.get("pred_classes", "see metadata.json"),
        performance=performance,
        monai_version=meta["monai_version"],
        pytorch_version=meta["pytorch_version"],
        numpy_version=meta["numpy_version"],
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        required_packages=" ".join(f"{k}=={v}" for k, v in required.items() if k != "unet_monai"),
        wheel=wheel_name,
        evaluate_config=evaluate_config,
        intended_use=meta["intended_use"].rstrip("."),
        references="\n".join(f"[{i}] {r}" for i, r in enumerate(meta.get("references", []), 1)),
        copyright=meta["copyright"].rstrip("."),
    )
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n") + "\n"


def export_bundle(
    out_dir: str | Path,
    ckpt: str | Path | None = None,
    bundle_dir: str | Path = DEFAULT_BUNDLE_DIR,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/<name>/`` in the MONAI model-zoo layout (see the module docstring).

    Args:
        out_dir: folder for the bundle; ``<name>`` (from ``metadata.json``) is created in it.
        ckpt: the network's state dict; default ``<bundle_dir>/models/model.pt`` (written by training).
        bundle_dir: the flat bundle to export.
        overrides: config id -> value, written into every exported config that has the id (for a checkpoint of
            other settings than the configs' defaults, e.g. ``{"features": [4, 8, 16]}``).
        overwrite: replace an earlier export at ``out_dir/<name>`` (a folder with ``configs/metadata.json``).

    Returns:
        The bundle folder ``out_dir/<name>``.

    Raises:
        FileNotFoundError: when the checkpoint or the bundle's files are missing.
        FileExistsError: when ``out_dir/<name>`` exists and ``overwrite`` is False, or is not an earlier export.
        ValueError: when the checkpoint is not a plain state dict, an override names no config id, or the wheel's
            version differs from ``required_packages_version["unet_monai"]``.
    """
    bundle_dir = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle_dir / "models" / "model.pt"
    _check_checkpoint(ckpt)
    meta_src = bundle_dir / "metadata.json"
    if not meta_src.is_file():
        raise FileNotFoundError(f"bundle_dir must hold metadata.json, got {bundle_dir} without it.")
    meta = json.loads(meta_src.read_text(encoding="utf-8"))
    target = Path(out_dir) / meta["name"]
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise FileExistsError(f"out_dir must not hold a non-empty {meta['name']}/, got {target}; pass --overwrite.")
        if not (target / "configs" / "metadata.json").is_file():
            raise FileExistsError(
                f"overwrite replaces only an earlier export, got {target} without configs/metadata.json."
            )
        shutil.rmtree(target)

    configs = target / "configs"
    export_configs(bundle_dir, configs, overrides)
    _match_network(configs, target)
    models = target / "models"
    models.mkdir(parents=True)
    shutil.copyfile(ckpt, models / "model.pt")

    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(models / "model.ts"),
        ckpt_file=str(models / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        bundle_root=str(target),
    )

    wheel = build_wheel(target / WHEEL_DIR)
    pinned = meta["required_packages_version"].get("unet_monai")
    wheel_version = wheel.name.split("-")[1]
    if pinned != wheel_version:
        raise ValueError(
            f"required_packages_version['unet_monai'] must be the wheel's version {wheel_version}, got {pinned} "
            f"in {meta_src}."
        )
    license_file = bundle_dir / "LICENSE"
    if not license_file.is_file():
        raise FileNotFoundError(f"bundle_dir must hold LICENSE, got {bundle_dir} without it.")
    shutil.copyfile(license_file, target / "LICENSE")
    (target / "docs").mkdir()
    with atomic_path(target / "docs" / "README.md") as tmp:
        tmp.write_text(render_readme(configs, wheel.name), encoding="utf-8")
    logger.info("model-zoo bundle written to %s", target)
    return target


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--override must be ID=VALUE, got {text!r}.")
    return key, _parse_value(value)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unet_monai.bundle.export OUT_DIR [--ckpt PATH] [--bundle_dir DIR] [--override ID=VALUE ...]
    [--overwrite]``; prints the bundle folder."""
    parser = argparse.ArgumentParser(prog="python -m unet_monai.bundle.export", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder that receives <name>/ (the zoo bundle)")
    parser.add_argument("--ckpt", type=Path, default=None, help="state dict; default <bundle_dir>/models/model.pt")
    parser.add_argument("--bundle_dir", type=Path, default=DEFAULT_BUNDLE_DIR, help="the flat bundle to export")
    parser.add_argument(
        "--override",
        type=_parse_override,
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="config id and JSON value written into the exported configs, e.g. features=[4,8,16]",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = export_bundle(args.out_dir, args.ckpt, args.bundle_dir, dict(args.override), args.overwrite)
    sys.stdout.write(f"{target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
