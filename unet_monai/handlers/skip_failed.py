"""Skip-and-report for batch inference and evaluation: one bad case is logged and listed, the others finish.

MONAI's evaluators stop at the first exception, whether it comes from loading a case (a corrupt file, a
NaN-filled volume) or from running it. Here a dataset wrapper (:class:`~unet_monai.data.FailureTolerantDataset`)
turns a loading error into a marker item, an ``iteration_update`` skips marked batches and catches errors of
inference and of the postprocessing (the writers), and ``CaseFailureReport`` logs each failure with the case and
its cause, keeps ``failures.csv`` up to date, and at the end says how many cases failed (and, by default, exits
non-zero so that a pipeline notices). Use batch size 1: a batch that fails is skipped whole.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from unet_monai.data.failure_tolerant import ERROR_KEY, FAILED_KEY, reported_cause
from unet_monai.io.atomic import atomic_path

__all__ = ["CaseFailureReport", "SkipFailedIteration"]

logger = logging.getLogger(__name__)


def _batch_labels(batch: Any) -> list[str]:
    """Case names of a collated batch (lists of ``case_id`` or image file names), for the failure report."""
    if isinstance(batch, Mapping):
        if "case_id" in batch:
            return [str(c) for c in batch["case_id"]]
        image = batch.get("image")
        meta = getattr(image, "meta", None) or {}
        names = meta.get("filename_or_obj")
        if names is not None:
            return [str(n) for n in (names if isinstance(names, (list, tuple)) else [names])]
    return ["?"]


class CaseFailureReport:
    """The cases that failed in a batch run: logged as they fail, listed in ``path`` (CSV: case, stage, error).

    Args:
        path: the CSV file, rewritten atomically after every failure (a crash later still leaves it). When it
            cannot be written (a read-only or full disk), that is logged as an ERROR naming the file and the
            cause, the remaining cases still run, and the end-of-run message lists the failed cases itself.
        fail_at_end: when the run ends with failures, raise so that the process exits non-zero after every
            other case was done; False only logs them.
    """

    def __init__(self, path: str | os.PathLike, fail_at_end: bool = True) -> None:
        self.path = Path(path)
        self.fail_at_end = fail_at_end
        self.failures: list[dict[str, str]] = []
        self.write_error: str | None = None  # why the last write of ``path`` failed; None once it is written

    def add(self, case: str, stage: str, error: str) -> None:
        """Record one failed case; ``stage`` is ``"loading"`` or ``"inference"`` (which includes writing).

        The failure is logged first; when ``path`` cannot be written (a read-only or full disk), that is logged
        as an ERROR naming the file and the cause, and the run goes on (every later failure tries again).
        """
        self.failures.append({"case": case, "stage": stage, "error": error})
        logger.error("case %s failed in %s and was skipped: %s", case, stage, error)
        try:
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["case", "stage", "error"])
                writer.writeheader()
                writer.writerows(self.failures)
        except (OSError, RuntimeError) as err:  # atomic_path's errors name the file and the cause
            self.write_error = str(err)
            logger.error(
                "the failure report %s could not be written (%s); the failed cases are in this log, "
                "the remaining cases still run",
                self.path,
                err,
            )
        else:
            self.write_error = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Engine | None = None) -> None:
        if not self.failures:
            return
        if self.write_error is None:
            listed = f"they are listed in {self.path}"
        else:
            names = ", ".join(f["case"] for f in self.failures)
            listed = f"{self.path} could not be written ({self.write_error}); they are: {names}"
        message = f"{len(self.failures)} case(s) failed and were skipped; {listed}."
        if self.fail_at_end:
            raise RuntimeError(message + " Every other case was processed.")
        logger.error(message)


class SkipFailedIteration:
    """An ``iteration_update`` for MONAI's ``SupervisedEvaluator``: runs the evaluator's own iteration, but a
    batch marked by ``FailureTolerantDataset`` or one whose inference or postprocessing raises is recorded in
    ``report`` and skipped (empty output, so no handler sees it).

    Args:
        report: where failures go; attach it to the evaluator too (``val_handlers``).
    """

    def __init__(self, report: CaseFailureReport) -> None:
        self.report = report

    def __call__(self, engine: Engine, batch: Any) -> Any:
        if isinstance(batch, Mapping) and FAILED_KEY in batch:
            for name, error in zip(batch[FAILED_KEY], batch[ERROR_KEY]):
                self.report.add(str(name), "loading", str(error))
            return []
        try:
            return engine._iteration(engine, batch)  # type: ignore[attr-defined]
        except Exception as err:  # noqa: BLE001 - reported per case; the run goes on
            for name in _batch_labels(batch):
                self.report.add(name, "inference", reported_cause(err))
            return []
