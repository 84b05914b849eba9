"""Per-case scores of an evaluation run, written as ``per_case.csv`` and ``summary.json`` (and, for EM membrane
probabilities, the ISBI 2012 leaderboard's threshold sweep in ``thresholds.csv``).

Why our own: MONAI's ``MetricsSaver`` writes one CSV per metric and no JSON summary, and its metric handlers
have no Rand / information scores; here every score of a case is one CSV row (``unet_monai.metrics.case_scores``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers.engine_output import decollated_items
from unet_monai.handlers.skip_failed import CaseFailureReport
from unet_monai.io.atomic import atomic_path
from unet_monai.metrics.case_scores import case_scores
from unet_monai.metrics.challenge import challenge_scores, threshold_sweep

__all__ = ["CaseMetricsReport", "case_name"]

logger = logging.getLogger(__name__)


def case_name(item: Mapping[str, Any], keys: Sequence[str] = ("image", "label", "pred")) -> str:
    """The name of a case: its datalist ``case_id``, else the file name of its image (from the MetaTensor's
    ``filename_or_obj``), else ``"?"``."""
    if item.get("case_id"):
        return str(item["case_id"])
    for key in keys:
        meta = getattr(item.get(key), "meta", None) or {}
        name = meta.get("filename_or_obj")
        if name:
            return Path(str(name)).name
    return "?"


def _spacing(labels: Any, spatial_dims: int) -> list[float] | None:
    affine = getattr(labels, "affine", None)
    if affine is None:
        return None
    matrix = torch.as_tensor(affine, dtype=torch.float64)[:spatial_dims, :spatial_dims]
    return [float(v) for v in torch.linalg.norm(matrix, dim=0)]


class CaseMetricsReport:
    """Score each case an evaluator sees; at the end write ``per_case.csv`` and ``summary.json`` atomically.

    Attach to a MONAI ``SupervisedEvaluator`` (``val_handlers``) whose output, after postprocessing, holds the
    true integer label map ``(1, H, W[, D])`` under ``label_key``, and under ``pred_key`` either a label map of the
    same shape or the network's logits ``(C, H, W[, D])``, C > 1 (float; labels = their argmax).
    With logits and a ``boundary_class``, the membrane probability also goes through the ISBI 2012 leaderboard's
    threshold sweep (:mod:`unet_monai.metrics.challenge`): ``thresholds.csv`` per case and threshold, and the
    leaderboard's pixel and Rand errors of all cases as ``challenge`` in the summary.

    Args:
        output_dir: where the files go.
        classes: foreground label value -> name, the classes to score (``{1: "membrane"}``).
        boundary_class: the membrane label for the ISBI 2012 EM scores (V_Rand, V_Info), or None.
        hd95: also the 95th-percentile Hausdorff distance, in mm (spacing from the label's affine).
        pred_key, label_key: the keys of the prediction and of the ground truth in the engine output.
        prefix: start of the file names (``prefix + "per_case.csv"``).
        failures: the run's ``CaseFailureReport`` (skip-and-report mode): its cases are listed in the summary
            as ``failed_cases``.
        ignore_index: the label value of unlabelled voxels (sparse annotations), left out of every score; None
            (default) scores every voxel.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Mapping[int | str, str],
        boundary_class: int | None = None,
        hd95: bool = False,
        pred_key: str = "pred",
        label_key: str = "label",
        prefix: str = "",
        failures: CaseFailureReport | None = None,
        ignore_index: int | None = None,
    ) -> None:
        try:
            self.classes = {int(value): str(name) for value, name in classes.items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"classes must map integer label values to names, got {classes!r}.") from err
        if not self.classes:
            raise ValueError("classes must name at least one foreground label value to score.")
        self.output_dir = Path(output_dir)
        self.boundary_class = boundary_class
        self.hd95 = hd95
        self.pred_key = pred_key
        self.label_key = label_key
        self.csv_path = self.output_dir / f"{prefix}per_case.csv"
        self.summary_path = self.output_dir / f"{prefix}summary.json"
        self.thresholds_path = self.output_dir / f"{prefix}thresholds.csv"
        self.rows: list[dict[str, Any]] = []
        self.sweeps: list[tuple[str, dict[str, np.ndarray]]] = []
        self.failures = failures
        self.ignore_index = ignore_index

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.score)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []
        self.sweeps = []

    def score(self, engine: Engine) -> None:
        outputs = decollated_items(engine.state.output)
        batch = decollated_items(engine.state.batch, len(outputs))
        for output, item in zip(outputs, batch):
            pred, label = output[self.pred_key], output[self.label_key]
            name = case_name({**item, **output})
            pred = self._labels_and_sweep(name, pred, label)
            spatial_dims = pred.ndim - 1
            scores = case_scores(
                pred,
                label,
                self.classes,
                spacing=_spacing(label, spatial_dims),
                hd95=self.hd95,
                boundary_class=self.boundary_class,
                ignore_index=self.ignore_index,
            )
            self.rows.append({"case": name, **scores})
            logger.info("%s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def _labels_and_sweep(self, name: str, pred: Any, label: Any) -> torch.Tensor:
        """Integer labels ``(1, *S)`` of ``pred``; from logits ``(C, *S)``, C > 1, also the threshold sweep of the
        membrane probability (when ``boundary_class`` is set). A one-channel map is taken as labels."""
        pred = torch.as_tensor(pred)
        if not pred.is_floating_point() or pred.shape[0] == 1:
            return pred
        logits = pred.float()
        if self.boundary_class is not None:
            if not 0 <= self.boundary_class < logits.shape[0]:
                raise ValueError(
                    f"boundary_class {self.boundary_class} is not a channel of the {logits.shape[0]}-channel logits."
                )
            probability = torch.softmax(logits, 0)[self.boundary_class]
            truth = torch.as_tensor(label)
            truth = truth[0] if truth.ndim == probability.ndim + 1 else truth
            self.sweeps.append((name, threshold_sweep(probability.numpy(), (truth == self.boundary_class).numpy())))
        return logits.argmax(0, keepdim=True).to(torch.uint8)

    def summary(self) -> dict[str, Any]:
        """Mean, standard deviation, median, minimum and maximum of every score over the cases (NaN ignored)."""
        metrics: dict[str, dict[str, float | int]] = {}
        names = [k for k in self.rows[0] if k != "case"] if self.rows else []
        for name in names:
            values = np.array([row[name] for row in self.rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            stats: dict[str, float | int] = {"n": int(finite.size)}
            if finite.size:
                stats.update(
                    mean=float(finite.mean()),
                    std=float(finite.std()),
                    median=float(np.median(finite)),
                    min=float(finite.min()),
                    max=float(finite.max()),
                )
            metrics[name] = stats
        summary: dict[str, Any] = {"cases": len(self.rows), "metrics": metrics}
        if self.sweeps:
            summary["challenge"] = challenge_scores([sweep for _, sweep in self.sweeps])
        if self.failures is not None:
            summary["failed_cases"] = list(self.failures.failures)
        return summary

    def write(self, engine: Engine | None = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        names = ["case"] + ([k for k in self.rows[0] if k != "case"] if self.rows else [])
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.rows)
        if self.sweeps:
            self._write_thresholds()
        summary = self.summary()
        with atomic_path(self.summary_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
        means = ", ".join(f"{k} {v['mean']:.4f}" for k, v in summary["metrics"].items() if "mean" in v)
        logger.info("%d cases: %s; written to %s and %s", len(self.rows), means, self.csv_path, self.summary_path)
        if "challenge" in summary:
            logger.info("ISBI 2012 leaderboard scores (best threshold): %s", summary["challenge"])

    def _write_thresholds(self) -> None:
        columns = ["true_positives", "false_positives", "false_negatives", "misclassified", "v_rand", "v_rand_thinned"]
        with atomic_path(self.thresholds_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case", "cell_threshold", *columns])
            for name, sweep in self.sweeps:
                for i, threshold in enumerate(sweep["thresholds"]):
                    writer.writerow([name, f"{threshold:.1f}", *(sweep[c][i] for c in columns)])
