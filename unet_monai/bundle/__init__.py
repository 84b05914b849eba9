"""The MONAI model-zoo form of the repository's bundle: :func:`export_bundle` writes ``configs/``, ``models/``
(``model.pt``, ``model.ts``), ``docs/README.md``, ``LICENSE`` and the ``unet_monai`` wheel in ``scripts/``
(``python -m unet_monai.bundle.export OUT_DIR``).

The names are imported on first use, so that ``python -m unet_monai.bundle.export`` runs the module once."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_wheel", "export_bundle", "export_configs", "pretty_json", "render_readme"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("unet_monai.bundle.export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
