"""The training state saved atomically after every epoch, so that a killed run resumes where it stopped.

Why our own: MONAI's ``CheckpointSaver`` writes through ignite's ``DiskSaver`` with ``atomic=False`` (so that
files get group permissions), which can leave a truncated checkpoint under its final name when the process
is killed mid-write. Loading stays with MONAI's ``CheckpointLoader`` (``weights_only=True``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from unet_monai.io.atomic import atomic_path

__all__ = ["EpochCheckpointSaver"]

logger = logging.getLogger(__name__)


class EpochCheckpointSaver:
    """Save ``save_dict``'s state dicts to ``path`` at the end of every epoch: temporary file, then rename.

    Args:
        path: the checkpoint file (``last.pt``); it always holds one complete epoch.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, the trainer itself).
    """

    def __init__(self, path: str | os.PathLike, save_dict: dict[str, Any]) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        self.path = Path(path)
        self.save_dict = save_dict

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        logger.info("epoch %d: training state saved to %s", engine.state.epoch, self.path)
