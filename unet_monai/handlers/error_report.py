"""A failed run's first ERROR line names the case and the cause.

When a case fails, ignite's engine logs "Current run is terminating due to exception: <message>", MONAI's
``StatsHandler`` "Exception: <message>" with the traceback, and, as the run unwinds, both once more. For a loading
error the message is MONAI's wrapper, "applying transform <unet_monai.io.readers.StrictLoadImaged object at
0x...>", which names neither the file nor the cause; those follow in about 300 lines of tracebacks.
:class:`ErrorReport` rewrites these lines (filters on the loggers; they are still logged at ERROR, and the
tracebacks still follow) into "case <id> (<file>) failed while loading: ValueError: <file> is a truncated or
corrupt gzip file ...".
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine, Events
from torch.utils.data import SequentialSampler

from unet_monai.data.failure_tolerant import reported_cause

__all__ = ["ErrorReport"]

_IGNITE_PREFIXES = {  # ignite's Engine: the iteration loop's line, then the run's
    "Current run is terminating due to exception": "",
    "Engine run is terminating due to exception": "run stopped: ",
}
_HANDLER_PREFIXES = {"Exception: ": ""}  # MONAI's StatsHandler on EXCEPTION_RAISED, before its traceback


def _describe_item(item: Any) -> str | None:
    """``"<case_id> (<image file>)"``, ``"<image file>"`` or ``"<case_id>"`` for one dataset item."""
    if not isinstance(item, Mapping):
        return None
    case_id = item.get("case_id")
    image = item.get("image")
    meta = getattr(image, "meta", None)
    if meta is not None:
        image = meta.get("filename_or_obj", None)
    if isinstance(image, (list, tuple)):  # several files of one case (channels)
        image = ", ".join(str(i) for i in image)
    file = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else None
    if case_id is not None and file:
        return f"{case_id} ({file})"
    return str(case_id) if case_id is not None else file


def _describe_batch(batch: Any) -> str | None:
    """The cases of a collated batch (``case_id`` lists, images with ``filename_or_obj`` in their metadata)."""
    if not isinstance(batch, Mapping):
        return None
    ids = batch.get("case_id")
    image = batch.get("image")
    meta = getattr(image, "meta", None) or {}
    files = meta.get("filename_or_obj")
    ids_list = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    files_list = list(files) if isinstance(files, (list, tuple)) else ([files] if files is not None else [])
    count = max(len(ids_list), len(files_list))
    if not count:
        return None
    names = []
    for i in range(count):
        item = {"case_id": ids_list[i] if i < len(ids_list) else None}
        item["image"] = files_list[i] if i < len(files_list) else None
        names.append(_describe_item(item) or "?")
    return ", ".join(names)


def _items(dataset: Any) -> Sequence | None:
    """The data list of a MONAI dataset, through wrappers that keep theirs in ``dataset``."""
    for _ in range(4):
        data = getattr(dataset, "data", None)
        if isinstance(data, Sequence):
            return data
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


class ErrorReport:
    """Rewrite ignite's "... terminating due to exception: <message>" ERROR lines of an engine (trainer or
    evaluator) into the case that failed, the step and the root cause, so that the first ERROR line of a failed
    run says what to fix.

    The case is known from the batch once it is loaded; while a batch is being loaded, from the dataset's item
    list (MONAI's ``Dataset``, also inside :class:`~unet_monai.data.FailureTolerantDataset`) when the data loader
    reads it in order (a ``SequentialSampler``, as in inference and evaluation); otherwise the line gives the
    cause only (our readers' errors name the file). The cause is the first error of the chain that is not
    MONAI's "applying transform ..." wrapper.

    Use it in a bundle's handler list: ``{"_target_": "unet_monai.handlers.ErrorReport"}``.

    Args:
        handler_loggers: names of further loggers whose "Exception: <message>" line (logged with the traceback
            when the engine raises) gets the same text: MONAI's ``StatsHandler``'s by default.
    """

    def __init__(self, handler_loggers: Sequence[str] = ("monai.handlers.StatsHandler",)) -> None:
        self.engine: weakref.ref[Engine] | None = None  # the logger outlives the engine; a weak reference
        self.phase = "before the first case"
        self.case: str | None = None
        self.fetched = 0  # batches fetched in this epoch
        self.handler_loggers = list(handler_loggers)
        self._filters = [_RewriteFilter(self, _IGNITE_PREFIXES), _RewriteFilter(self, _HANDLER_PREFIXES)]

    def attach(self, engine: Engine) -> None:
        """Follow ``engine``'s batches and rewrite its error lines (``engine.logger``)."""
        self.engine = weakref.ref(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._loading)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._loaded)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._done)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_done)
        loggers = [(engine.logger, self._filters[0])]
        loggers += [(logging.getLogger(name), self._filters[1]) for name in self.handler_loggers]
        for logger, rewrite in loggers:
            for old in [f for f in logger.filters if isinstance(f, _RewriteFilter) and f.engine() is None]:
                logger.removeFilter(old)  # of engines that are gone (loggers are shared by name)
            logger.addFilter(rewrite)

    def _started(self, engine: Engine) -> None:
        self.phase, self.case = "before the first case", None

    def _epoch_started(self, engine: Engine) -> None:
        self.fetched = 0
        self.phase, self.case = f"at the start of epoch {engine.state.epoch}", None

    def _loading(self, engine: Engine) -> None:
        self.phase, self.case = "loading", self._next_case(engine)

    def _loaded(self, engine: Engine) -> None:
        self.fetched += 1
        self.phase, self.case = "processing", _describe_batch(engine.state.batch) or self.case

    def _done(self, engine: Engine) -> None:
        self.phase = "after"

    def _epoch_done(self, engine: Engine) -> None:
        last = engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs
        self.phase, self.case = "at the end of the run" if last else f"at the end of epoch {engine.state.epoch}", None

    def _next_case(self, engine: Engine) -> str | None:
        """The item the data loader is about to read, when it reads the dataset in order."""
        loader = engine.state.dataloader
        batch_size = getattr(loader, "batch_size", None)
        if not isinstance(getattr(loader, "sampler", None), SequentialSampler) or not batch_size:
            return None
        items = _items(getattr(loader, "dataset", None))
        first = self.fetched * batch_size
        if items is None or first >= len(items):
            return None
        return ", ".join(_describe_item(items[i]) or "?" for i in range(first, min(first + batch_size, len(items))))

    def describe(self, error: BaseException) -> str:
        """What failed and why, in one sentence: ``"case <id> (<file>) failed while loading: <cause>"``."""
        cause = reported_cause(error)
        where = {
            "loading": "while loading",
            "processing": "during inference, postprocessing or writing",
            "after": "after its iteration (in a handler)",
        }.get(self.phase, self.phase)
        if self.case is None:
            return f"failed {where}{' a case' if self.phase == 'loading' else ''}: {cause}"
        return f"case {self.case} failed {where}: {cause}"


class _RewriteFilter(logging.Filter):
    """Rewrites ignite's exception lines of one engine. ignite logs them from its ``except`` blocks, so the error
    is the one being handled, and the frame that handles it is the engine's own: engines of one class share a
    logger (its name is the class's), and each report rewrites only its engine's lines."""

    def __init__(self, report: ErrorReport, prefixes: Mapping[str, str]) -> None:
        super().__init__()
        self.report = report
        self.prefixes = prefixes  # the start of a line to rewrite -> what the new line starts with

    def engine(self) -> Engine | None:
        return self.report.engine() if self.report.engine is not None else None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not isinstance(record.msg, str):
            return True
        _, error, trace = sys.exc_info()
        prefix = next((p for p in self.prefixes if record.msg.startswith(p)), None)
        if prefix is None or not isinstance(error, Exception) or trace is None:
            return True  # KeyboardInterrupt and the like are no case's failure
        engine = self.engine()
        if engine is None or trace.tb_frame.f_locals.get("self") is not engine:
            return True
        record.msg = self.prefixes[prefix] + self.report.describe(error)
        record.args = ()
        return True
