"""What a training run leaves in its output folder for a person to look at: a per-epoch metrics CSV, a PNG of the
training curves and a PNG of validation overlays (image, label, prediction).

Why our own: MONAI's handlers write TensorBoard events, MLflow runs and one CSV per metric at the end; none
keeps an up-to-date table and pictures that can be opened without a server.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers.engine_output import decollated_items, scalar_metrics
from unet_monai.io.atomic import atomic_path

__all__ = ["TrainingReport", "label_map", "middle_slice"]

logger = logging.getLogger(__name__)


def label_map(array: Any) -> np.ndarray:
    """``(C, H, W[, D])`` one-hot / probabilities (argmax over C) or ``(1, H, W[, D])`` labels -> ``(H, W[, D])``."""
    a = torch.as_tensor(np.asarray(array)).float()
    return (a.argmax(0) if a.shape[0] > 1 else a[0]).numpy()


def middle_slice(array: np.ndarray) -> np.ndarray:
    """``(H, W)`` as is; ``(H, W, D)`` -> its middle slice along the last axis."""
    return array if array.ndim == 2 else array[..., array.shape[-1] // 2]


class TrainingReport:
    """Keep ``training_metrics.csv``, ``training_curves.png`` and ``validation_overlays.png`` up to date.

    The CSV is rewritten after every epoch, the curves after every validation and at the end, the overlays after
    every validation. One CSV row per epoch: epoch, iterations, mean training loss, learning rate, the trainer's
    metrics and, in epochs with a validation, the validator's metrics, and the epoch's wall time (s). A run stopped
    mid-epoch (``engine.terminate()``, e.g. by a time budget) gets a last row for the iterations of that epoch:
    loss, rate and time only, as the epoch's metrics were never computed. A resumed run keeps the rows of the
    epochs before the one it resumes from (a partial epoch's row is replaced by the resumed epoch's). Every file
    is replaced atomically.

    Attach to the trainer (``train_handlers``) after the ``ValidationHandler``, so that an epoch's validation
    metrics exist when its row is written.

    Args:
        output_dir: where the files go.
        validator: the validation engine; its first ``num_overlays`` cases are drawn after each validation.
        optimizer: for the learning rate column (its first parameter group).
        loss_key: the loss in the trainer's output (``engine.state.output[i][loss_key]``).
        num_overlays: validation cases drawn (middle slice along the last axis for 3D).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        validator: Engine | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss_key: str = "loss",
        num_overlays: int = 4,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.csv_path = self.output_dir / "training_metrics.csv"
        self.curves_path = self.output_dir / "training_curves.png"
        self.overlays_path = self.output_dir / "validation_overlays.png"
        self.validator = validator
        self.optimizer = optimizer
        self.loss_key = loss_key
        self.num_overlays = num_overlays
        self.keys = (image_key, label_key, pred_key)
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._epoch_start = time.perf_counter()
        self._lr: float | None = None
        self._overlays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.TERMINATE, self._terminated)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_STARTED, lambda _: self._overlays.clear())
            self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._collect_overlays)
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._draw_overlays)

    def _started(self, engine: Engine) -> None:
        self.rows = []
        if self.csv_path.is_file():  # resuming: keep the epochs already done
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= engine.state.epoch]

    def _epoch_started(self, engine: Engine) -> None:
        self._losses = []
        self._epoch_start = time.perf_counter()
        self._lr = None

    def _iteration(self, engine: Engine) -> None:
        if self._lr is None and self.optimizer is not None:  # after the first iteration's rate was set (TimeBudget)
            self._lr = self.optimizer.param_groups[0]["lr"]
        # the loss is the batch's, repeated in every decollated item: read it once
        for output in decollated_items(engine.state.output)[:1]:
            if isinstance(output, dict) and self.loss_key in output:
                self._losses.append(float(output[self.loss_key]))

    def _row(self, engine: Engine) -> dict[str, Any]:
        """The current epoch's epoch, iteration, loss and learning rate."""
        row: dict[str, Any] = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "loss": float(np.mean(self._losses)) if self._losses else float("nan"),
        }
        if self._lr is not None:
            row["lr"] = self._lr  # the rate of the epoch's first iteration
        return row

    def _epoch_completed(self, engine: Engine) -> None:
        row = self._row(engine)
        row.update(scalar_metrics(engine.state.metrics))
        validated = self.validator is not None and self.validator.state.epoch == engine.state.epoch
        if validated:
            row.update(scalar_metrics(self.validator.state.metrics))  # type: ignore[union-attr]
        row["time_s"] = round(time.perf_counter() - self._epoch_start, 3)
        self.rows.append(row)
        self._write_csv()
        if validated:  # drawing costs a few tenths of a second: after validations and at the end only
            self._draw_curves()

    def _terminated(self, engine: Engine) -> None:
        """A run stopped mid-epoch: no EPOCH_COMPLETED follows, so the epoch's iterations get their row here."""
        if not self._losses or (self.rows and int(self.rows[-1]["iteration"]) >= engine.state.iteration):
            return  # stopped at an epoch's end (its row is written) or before any iteration of this epoch
        row = self._row(engine)
        row["time_s"] = round(time.perf_counter() - self._epoch_start, 3)
        self.rows.append(row)
        self._write_csv()

    def _completed(self, engine: Engine) -> None:
        if self.rows:
            self._draw_curves()

    def _write_csv(self) -> None:
        names: list[str] = []
        for row in self.rows:
            names += [k for k in row if k not in names]
        names = [k for k in names if k != "time_s"] + ["time_s"]
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=names, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    def _series(self, name: str) -> tuple[list[int], list[float]]:
        points = [(int(r["epoch"]), float(r[name])) for r in self.rows if r.get(name) not in (None, "")]
        return [p[0] for p in points], [p[1] for p in points]

    def _draw_curves(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
        ax_loss.plot(*self._series("loss"), label="training loss")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.legend()
        skip = {"epoch", "iteration", "loss", "lr", "time_s"}
        metric_names = sorted({k for r in self.rows for k in r if k not in skip})
        for name in metric_names:
            ax_metric.plot(*self._series(name), marker="o" if name.startswith("val") else None, label=name)
        ax_metric.set_xlabel("epoch")
        ax_metric.set_ylabel("metric")
        if metric_names:
            ax_metric.legend()
        fig.tight_layout()
        with atomic_path(self.curves_path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    def _collect_overlays(self, engine: Engine) -> None:
        image_key, label_key, pred_key = self.keys
        for output in decollated_items(engine.state.output):
            if len(self._overlays) >= self.num_overlays:
                return
            if not all(k in output for k in self.keys):
                continue
            image = middle_slice(np.asarray(torch.as_tensor(np.asarray(output[image_key]))[0].float()))
            label = middle_slice(label_map(output[label_key]))
            pred = middle_slice(label_map(output[pred_key]))
            self._overlays.append((image, label, pred))

    def _draw_overlays(self, engine: Engine) -> None:
        if not self._overlays:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = len(self._overlays)
        fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
        for i, (image, label, pred) in enumerate(self._overlays):
            for j, (title, mask) in enumerate((("image", None), ("label", label), ("prediction", pred))):
                ax = axes[i, j]
                ax.imshow(image.T, cmap="gray")  # MONAI arrays are (x, y): transpose to rows = y
                if mask is not None:
                    ax.imshow(np.ma.masked_equal(mask.T, 0), cmap="autumn", alpha=0.45, interpolation="nearest")
                ax.set_title(f"{title} (case {i})" if j == 0 else title)
                ax.axis("off")
        fig.suptitle(f"validation at epoch {engine.state.epoch}")
        fig.tight_layout()
        with atomic_path(self.overlays_path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
