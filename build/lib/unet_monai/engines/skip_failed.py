"""Skip-and-report for batch inference and evaluation: one bad case is logged and listed, the others finish.

MONAI's evaluators stop at the first exception, whether it comes from loading a case (a corrupt file, a
NaN-filled volume) or from running it. Here a dataset wrapper turns a loading error into a marker item, an
``iteration_update`` skips marked batches and catches errors of inference and of the postprocessing (the
writers), and ``CaseFailureReport`` logs each failure with the case and its cause, keeps
``failures.csv`` up to date, and at the end says how many cases failed (and, by default, exits non-zero so
that a pipeline notices). Use batch size 1: a batch that fails is skipped whole.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from torch.utils.data import Dataset

from unet_monai.io.atomic import atomic_path

__all__ = ["CaseFailureReport", "FailureTolerantDataset", "SkipFailedIteration", "reported_cause"]

logger = logging.getLogger(__name__)

FAILED_KEY = "failed_case"
ERROR_KEY = "failure"


def reported_cause(error: BaseException) -> str:
    """``"Type: message"`` of the first error in the cause chain that is not MONAI's "applying transform ..."
    wrapper: our readers' and checks' errors, which name the file, rather than what they wrap."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    reported = next((e for e in chain if not str(e).startswith("applying transform")), chain[-1])
    return f"{type(reported).__name__}: {reported}"


def _case_label(item: Any) -> str:
    if isinstance(item, Mapping):
        for key in ("case_id", "image"):
            if item.get(key):
                return str(item[key])
    return str(item)


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
        path: the CSV file, rewritten atomically after every failure (a crash later still leaves it).
        fail_at_end: when the run ends with failures, raise so that the process exits non-zero after every
            other case was done; False only logs them.
    """

    def __init__(self, path: str | os.PathLike, fail_at_end: bool = True) -> None:
        self.path = Path(path)
        self.fail_at_end = fail_at_end
        self.failures: list[dict[str, str]] = []

    def add(self, case: str, stage: str, error: str) -> None:
        """Record one failed case; ``stage`` is ``"loading"`` or ``"inference"`` (which includes writing)."""
        self.failures.append({"case": case, "stage": stage, "error": error})
        logger.error("case %s failed in %s and was skipped: %s", case, stage, error)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["case", "stage", "error"])
            writer.writeheader()
            writer.writerows(self.failures)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.failures.clear())
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Engine | None = None) -> None:
        if not self.failures:
            return
        message = f"{len(self.failures)} case(s) failed and were skipped; they are listed in {self.path}."
        if self.fail_at_end:
            raise RuntimeError(message + " Every other case was processed.")
        logger.error(message)


class FailureTolerantDataset(Dataset):
    """A map-style dataset whose loading errors become marker items ``{failed_case, failure}`` instead of
    exceptions, so that the DataLoader (and its worker processes) go on to the next case.

    Args:
        dataset: a MONAI/torch dataset; when it has ``data`` (MONAI's ``Dataset``), failures are named by
            the item's ``case_id`` or image path.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as err:  # noqa: BLE001 - any error of one case is reported, never fatal to the run
            data: Sequence[Any] | None = getattr(self.dataset, "data", None)
            name = _case_label(data[index]) if data is not None else f"item {index}"
            return {FAILED_KEY: name, ERROR_KEY: reported_cause(err)}


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
