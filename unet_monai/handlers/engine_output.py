"""Reading what MONAI's engines leave in ``engine.state``: decollated items and scalar metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["decollated_items", "scalar_metrics"]


def decollated_items(value: Any, count: int | None = None) -> list[Any]:
    """``engine.state.output`` or ``.batch`` as a list of per-item dicts (MONAI decollates them into lists).

    A single dict becomes a one-item list; ``None`` becomes ``count`` empty dicts (or none).
    """
    if isinstance(value, list):
        return value
    if value is None:
        return [{} for _ in range(count or 0)]
    return [value]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are single numbers, as floats; per-class arrays and other values are left out."""
    scalars: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            scalars[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return scalars
