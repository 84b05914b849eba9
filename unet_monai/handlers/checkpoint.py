"""Checkpoints written atomically: the training state after every epoch and where training was stopped, so that a
killed run resumes where it stopped and a run cut short keeps its last step, and MONAI's best-model checkpoints.

Why our own: MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver`` with ``atomic=False`` (so that
files get group permissions), which can leave a truncated checkpoint under its final name when the process
is killed mid-write; ``AtomicCheckpointSaver`` is MONAI's with our atomic writes. Loading stays with MONAI's
``CheckpointLoader`` (``weights_only=True``). A run killed mid-save leaves only its temporary file
(``.last.pt.<random>.tmp``); the next run's savers remove those of their own files when they start.

In a distributed run ``EpochCheckpointSaver`` behaves like MONAI's ``CheckpointSaver`` (ignite's ``Checkpoint``): a
network wrapped in ``DistributedDataParallel`` or ``DataParallel`` is saved as its ``.module``, so the file holds
plain keys (no ``module.`` prefix) that load into the bare network, and only one rank (``save_on_rank``, 0) writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from unet_monai.io.atomic import atomic_path, remove_stale_temporaries

__all__ = ["AtomicCheckpointSaver", "EpochCheckpointSaver"]

logger = logging.getLogger(__name__)


def _state_dict(obj: Any) -> dict[str, Any]:
    """``obj.state_dict()``, of the wrapped module for ``DataParallel`` / ``DistributedDataParallel``."""
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        obj = obj.module
    return obj.state_dict()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class EpochCheckpointSaver:
    """Save ``save_dict``'s state dicts to ``path`` at the end of every epoch, and when the engine is terminated
    mid-epoch (a time budget, early stopping): temporary file, then rename.

    ignite fires no ``EPOCH_COMPLETED`` for an epoch that ``engine.terminate()`` cut short, so without the second save
    ``path`` would miss up to an epoch of the run's last iterations, and the network a run leaves in memory (which
    a semi-automatic run segments with) would differ from the one on disk. A trainer saved mid-epoch resumes there:
    ignite runs the rest of that epoch.

    Args:
        path: the checkpoint file (``last.pt``); it always holds the state after a whole iteration.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, the trainer itself). A network
            wrapped in ``DistributedDataParallel`` or ``DataParallel`` is saved unwrapped (keys without ``module.``).
        save_on_rank: in a distributed run (``torch.distributed`` initialized), the rank that writes; the others
            do nothing. Ignored otherwise.
    """

    def __init__(self, path: str | os.PathLike, save_dict: dict[str, Any], save_on_rank: int = 0) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        if save_on_rank < 0:
            raise ValueError(f"save_on_rank must be a rank (>= 0), got {save_on_rank}.")
        self.path = Path(path)
        self.save_dict = save_dict
        self.save_on_rank = save_on_rank
        self._saved_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        """Save after every epoch and on ``TERMINATE``; first remove the temporary files a killed run left beside
        ``path``."""
        if not _distributed() or dist.get_rank() == self.save_on_rank:
            _remove_stale(self.path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.TERMINATE, self._save_where_stopped)

    def __call__(self, engine: Engine) -> None:
        self._saved_iteration = engine.state.iteration
        if _distributed() and dist.get_rank() != self.save_on_rank:
            return
        state = {name: _state_dict(obj) for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        logger.info("epoch %d: training state saved to %s (iteration %d)", engine.state.epoch, self.path,
                    engine.state.iteration)  # fmt: skip

    def _save_where_stopped(self, engine: Engine) -> None:
        """Save unless this iteration's state is already on disk (terminated from an ``EPOCH_COMPLETED`` handler)."""
        if engine.state.iteration != self._saved_iteration:
            self(engine)


def _remove_stale(path: Path) -> None:
    for stale in remove_stale_temporaries(path):
        logger.info("removed %s, a temporary file of a save that was interrupted (the run was killed)", stale)


class _AtomicSaveHandler(BaseSaveHandler):
    """ignite save handler: ``torch.save`` through ``atomic_path`` on rank 0; ``filename`` fixes the name."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        with atomic_path(self.dirname / (self.filename or filename)) as tmp:
            torch.save(checkpoint, tmp)

    def remove(self, filename: str) -> None:
        # ignite removes the old best before saving the new one; under a fixed name the save replaces it
        # atomically, so removing first would only lose the old file if the save then failed
        if self.filename is None and idist.get_rank() == 0:
            (self.dirname / filename).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (best model by key metric, final, every N epochs; same arguments), writing each
    file through ``atomic_path`` so that a kill or a full disk never leaves a truncated checkpoint under its name.

    Why: MONAI's own writes with ignite's ``DiskSaver(atomic=False)``. This swaps the save handler of the ignite
    ``Checkpoint`` objects that MONAI builds (its ``_final_checkpoint``, ``_key_metric_checkpoint`` and
    ``_interval_checkpoint``; monai >= 1.5, < 1.7 as pinned).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicSaveHandler(self.save_dir, fixed_name)  # type: ignore[assignment]
                if fixed_name is not None and idist.get_rank() == 0:
                    _remove_stale(Path(self.save_dir) / fixed_name)
