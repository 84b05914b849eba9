"""MONAI Label 0.8.5 support for the tests: what its ``BundleInferTask`` reads from a model-zoo bundle, the zoo
bundle it serves (built from ``bundles/unet`` with :func:`unet_monai.bundle.export_configs`), the same construction
and inference steps replayed without MONAI Label, and a real MONAI Label server (``apps/monailabel``) started as a
subprocess.

The constants below are copied from monailabel 0.8.5 (the wheel ``monailabel-0.8.5-202411252313-py3-none-any.whl``
on PyPI); file and line are given in each comment."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigItem, ConfigParser
from monai.transforms import Compose, LoadImaged, SaveImaged

REPO = Path(__file__).resolve().parents[2]
FLAT_BUNDLE = REPO / "bundles" / "unet"
BUNDLE_NAME = "unet"  # the model name MONAI Label serves: the bundle folder's name under <app>/model/

# --- monailabel 0.8.5, monailabel/tasks/infer/bundle.py ---------------------------------------------------------
INFER_CONFIGS = ("inference.json", "inference.yaml")  # BundleConstants.configs, line 35; in <bundle>/configs (l. 101)
METADATA_JSON = "metadata.json"  # BundleConstants.metadata_json, line 38; opened in <bundle>/configs (line 132)
MODEL_PYTORCH = "model.pt"  # BundleConstants.model_pytorch, line 41; in <bundle>/models (line 119)
MODEL_TORCHSCRIPT = "model.ts"  # BundleConstants.model_torchscript, line 44; used when model.pt is absent (line 123)
KEY_DEVICE = "device"  # BundleConstants.key_device, line 47; replaced by the request's device (_update_device, l. 301)
KEY_BUNDLE_ROOT = "bundle_root"  # line 50; set to the bundle folder after read_config (_load_bundle_config, l. 309)
KEY_NETWORK_DEF = "network_def"  # line 53; get_parsed_content(instantiate=True) when models/model.pt exists (l. 121)
KEYS_PREPROCESSING = (
    "preprocessing",
    "pre_transforms",
)  # line 56; a Compose gives its .transforms (pre_transforms, l. 186)
KEYS_POSTPROCESSING = ("postprocessing", "post_transforms")  # line 59; same (post_transforms, line 255)
KEYS_INFERER = ("inferer",)  # line 62; SimpleInferer when none is defined (inferer, line 233)
POST_FILTER = (SaveImaged,)  # BundleInferTask.__init__ post_filter default, line 86: SaveImaged steps are dropped
LOAD_STRICT = False  # BundleInferTask.__init__ load_strict default, line 90
# metadata: network_data_format.inputs / .outputs, first item each (lines 135-136); the output's channel_def gives the
# label names (line 141), the input's spatial_shape the dimension (len, line 147); description (145), version (175).
# --- monailabel 0.8.5, monailabel/tasks/infer/basic_infer.py ----------------------------------------------------
CHECKPOINT_KEY = (
    "model"  # BasicInferTask model_state_dict default, line 56: checkpoint.get("model", checkpoint) (l. 469)
)
INPUT_KEY, OUTPUT_KEY = "image", "pred"  # input_key / output_label_key defaults, lines 57-58
# run_inferer (lines 491-525): inputs[None] -> inferer(inputs, network) under no_grad -> outputs[0] -> data["pred"].

# --- the app and the server ----------------------------------------------------------------------------------------
APP_DIR = REPO / "apps" / "monailabel"  # the minimal app (main.py); README.md there says why not the stock one
APP_CONF = {"models": BUNDLE_NAME}  # --conf bundle <folder> is added by monailabel_server
PYTHON_ENV = "UNET_MONAI_MONAILABEL_PYTHON"  # an interpreter with monailabel, when the test's own has none
TINY_NETWORK = {"features": [4, 8, 16], "val_output_patch_size": [128, 128]}  # the session's tiny checkpoint


def make_zoo_bundle(dest: Path, checkpoint: Path | None, overrides: Mapping[str, Any] = TINY_NETWORK) -> Path:
    """Write the zoo-layout bundle MONAI Label loads at ``dest``: ``configs/`` (the repository's configs as
    :func:`unet_monai.bundle.export_configs` writes them, with ``overrides``) and ``models/model.pt``.

    Args:
        dest: the bundle folder (the app takes ``--conf bundle <dest>``, default ``<app>/model/unet``); created.
        checkpoint: a state dict of the network ``configs/inference.json`` defines with ``overrides``; None writes
            the freshly initialised network's (seeded by the caller) instead.
        overrides: config id -> value written into the configs (the settings the checkpoint was trained with).

    Returns:
        ``dest``.
    """
    from unet_monai.bundle import export_configs

    export_configs(FLAT_BUNDLE, dest / "configs", dict(overrides))
    models = dest / "models"
    models.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        parser = ConfigParser()
        parser.read_config(str(dest / "configs" / INFER_CONFIGS[0]))
        parser[KEY_BUNDLE_ROOT] = str(dest)
        torch.save(parser.get_parsed_content(KEY_NETWORK_DEF).state_dict(), models / MODEL_PYTORCH)
    else:
        shutil.copyfile(checkpoint, models / MODEL_PYTORCH)
    return dest


@dataclass
class InferTaskSteps:
    """What ``BundleInferTask.__init__`` and its transform getters produce (see :func:`replay_infer_task`)."""

    network: torch.nn.Module
    labels: dict[str, int]
    dimension: int
    version: str
    preprocessing: list[Any]
    inferer: Any
    postprocessing: list[Any]


def _first_parsed(parser: ConfigParser, keys: Sequence[str]) -> Any:
    for key in keys:
        if parser.get(key):
            return parser.get_parsed_content(key, instantiate=True)
    return None


def replay_infer_task(bundle: Path, device: str = "cpu") -> InferTaskSteps:
    """Replay, without MONAI Label, what monailabel 0.8.5's ``BundleInferTask`` does with ``bundle``: find
    ``configs/inference.json``, read it with ``ConfigParser`` and set ``bundle_root``, build ``network_def`` and load
    ``models/model.pt`` into it (``strict=False`` as MONAI Label does, after checking that the keys match), read
    ``configs/metadata.json``, set the request's device, and parse the pre-processing (``LoadImaged`` steps switched
    to ``image_only=False``), the inferer and the post-processing (``SaveImaged`` steps dropped).

    Args:
        bundle: a zoo-layout bundle folder.
        device: the request's device (MONAI Label passes a string such as ``"cpu"`` or ``"cuda:0"``).

    Returns:
        The network on ``device`` in eval mode, the labels, the dimension, the version and the three parsed parts.

    Raises:
        FileNotFoundError: when ``bundle`` lacks ``configs/inference.json``, ``configs/metadata.json`` or
            ``models/model.pt``.
        ValueError: when the checkpoint's keys differ from the network's (MONAI Label only warns, then loads
            whatever matches).
    """
    configs = [c for c in INFER_CONFIGS if (bundle / "configs" / c).is_file()]
    if not configs:
        raise FileNotFoundError(f"bundle must hold configs/{INFER_CONFIGS[0]}, got {bundle} without it.")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / configs[0]))
    parser.config.update({KEY_BUNDLE_ROOT: str(bundle)})  # type: ignore[union-attr]  # as _load_bundle_config
    parser.config["use_click"] = False  # type: ignore[index]  # __init__ line 113, for a non-deepedit type
    model = bundle / "models" / MODEL_PYTORCH
    if not model.is_file():
        raise FileNotFoundError(f"bundle must hold models/{MODEL_PYTORCH}, got {bundle} without it.")
    network = parser.get_parsed_content(KEY_NETWORK_DEF, instantiate=True)
    metadata = json.loads((bundle / "configs" / METADATA_JSON).read_text())
    key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
    key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
    if (key_image, key_pred) != (INPUT_KEY, OUTPUT_KEY):
        raise ValueError(f"metadata's first input and output must be {INPUT_KEY!r}, {OUTPUT_KEY!r}, got {key_image!r}.")
    labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
    spatial_shape = image.get("spatial_shape")

    checkpoint = torch.load(model, map_location=device)  # weights_only: a plain state dict loads
    state = checkpoint.get(CHECKPOINT_KEY, checkpoint)
    if set(state) != set(network.state_dict()):
        raise ValueError(f"models/{MODEL_PYTORCH} must hold network_def's keys, got {sorted(set(state))[:5]}...")
    network = network.to(torch.device(device))
    network.load_state_dict(state, strict=LOAD_STRICT)
    network.eval()

    parser.config.update({KEY_DEVICE: device})  # type: ignore[union-attr]  # _update_device
    if parser.ref_resolver.items.get(KEY_DEVICE):
        parser.ref_resolver.items[KEY_DEVICE] = ConfigItem(config=device, id=KEY_DEVICE)
    pre = _first_parsed(parser, KEYS_PREPROCESSING)
    pre = list(pre.transforms) if isinstance(pre, Compose) else list(pre or [])
    for t in pre:
        if isinstance(t, LoadImaged):
            t._loader.image_only = False
    inferer = _first_parsed(parser, KEYS_INFERER)
    post = _first_parsed(parser, KEYS_POSTPROCESSING)
    post = list(post.transforms) if isinstance(post, Compose) else list(post or [])
    post = [t for t in post if not isinstance(t, POST_FILTER)]
    return InferTaskSteps(
        network=network,
        labels=labels,
        dimension=len(spatial_shape) if spatial_shape else 3,
        version=metadata.get("version", ""),
        preprocessing=pre,
        inferer=inferer,
        postprocessing=post,
    )


def run_steps(steps: InferTaskSteps, image: Path, device: str = "cpu") -> dict[str, Any]:
    """Run one image through the replayed steps as ``BasicInferTask.__call__`` does (pre-processing on
    ``{"image": path}``, ``inferer(image[None], network)`` under ``no_grad``, the batch's first item as ``pred``,
    post-processing), before MONAI Label's own ``Restored`` step (which would resize a wrong-sized ``pred``).

    Returns:
        The data dictionary; ``pred`` is the label map, ``(1, H, W)``.
    """
    data: dict[str, Any] = {INPUT_KEY: str(image)}
    for t in steps.preprocessing:
        data = t(data)
    with torch.no_grad():
        outputs = steps.inferer(data[INPUT_KEY][None].to(torch.device(device)), steps.network)
    data[OUTPUT_KEY] = outputs[0]
    for t in steps.postprocessing:
        data = t(data)
    return data


# --- a real server -------------------------------------------------------------------------------------------------


def monailabel_python() -> str:
    """The interpreter that runs MONAI Label: ``$UNET_MONAI_MONAILABEL_PYTHON`` when set, else the test's own."""
    return os.environ.get(PYTHON_ENV) or sys.executable


def monailabel_unavailable(python: str) -> str | None:
    """Why ``python`` cannot run MONAI Label 0.8.5's server (None when it can): ``monailabel.app`` (the FastAPI app
    with all its endpoints, which import pydicom_seg, itk and torchvision) must import and be version 0.8.5."""
    probe = "import monailabel, monailabel.app; print(monailabel.__version__)"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{python} cannot run the probe: {err}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"monailabel's server does not import in {python}: {last}"
    version = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if version != "0.8.5":
        return f"this test is written against monailabel 0.8.5, got {version!r} in {python}"
    return None


def copy_app(dest: Path) -> Path:
    """Copy ``apps/monailabel`` (the minimal app) to ``dest``: ``start_server`` creates ``model/``, ``lib/``,
    ``logs/`` and ``bin/`` in the app folder, which must not happen in the repository. Returns ``dest``."""
    shutil.copytree(APP_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "lib", "bin"))
    return dest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running MONAI Label server: its address and log file."""

    url: str
    log: Path


@contextlib.contextmanager
def monailabel_server(
    python: str, app: Path, studies: Path, bundle: Path, conf: Mapping[str, str] = APP_CONF, ready_s: float = 300.0
) -> Iterator[Server]:
    """Start ``monailabel start_server`` with ``app`` serving ``bundle`` on 127.0.0.1 and a free port, wait until
    ``GET /info/`` lists the bundle's model, yield the server, and stop it (its whole process group) on exit, also
    after a failure.

    The server runs with ``PYTHONPATH`` = the repository (the configs import ``unet_monai``) in ``studies``' parent
    folder, outside the repository.

    Raises:
        RuntimeError: when the server exits or is not ready within ``ready_s`` seconds (the message has its log).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    for key, value in {**conf, "bundle": str(bundle)}.items():
        cmd += ["--conf", key, value]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    log = studies.parent / "monailabel_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=studies.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the MONAI Label server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=5) as response:
                    info = json.load(response)
                if BUNDLE_NAME in info.get("models", {}):
                    break
                raise RuntimeError(f"the server must serve model {BUNDLE_NAME!r}, got {sorted(info.get('models', {}))}")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MONAI Label server must be ready within {ready_s} s:\n{_tail(log)}")
            time.sleep(1.0)
        yield Server(url=url, log=log)
    finally:
        _stop(proc)


def _tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def infer(server: Server, image_id: str, dest: Path, timeout_s: float = 300.0) -> Path:
    """``POST /infer/unet?image=<id>&output=image`` for an image of the server's studies folder; the label file
    it answers with is written into ``dest`` under the name the server gives it. Returns its path."""
    query = urllib.parse.urlencode({"image": image_id, "output": "image"})
    request = urllib.request.Request(f"{server.url}/infer/{BUNDLE_NAME}?{query}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            name = response.headers.get_filename() or f"{image_id}_label.nii.gz"
            body = response.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(
            f"inference on {image_id} must succeed, got HTTP {err.code}: {err.read()[-2000:]!r}\n{_tail(server.log)}"
        ) from err
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / Path(name).name
    path.write_bytes(body)
    return path
