"""An exponential moving average of the network's weights, saved as a checkpoint that inference loads.

Why our own: ignite's ``EMAHandler`` keeps the average in memory only. ``WeightAverage`` wraps it: its warm-up ramp
on by default (so that the random initial weights are forgotten within ``warmup_iterations``), the averaged weights
saved atomically after every epoch and where training stops as ``{"model": state_dict}`` (the form
``inference.json``'s ``--ckpt_path`` loads), and the average restored from that file on ``--resume True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from ignite.engine import Engine
from ignite.handlers import EMAHandler

from unet_monai.handlers.checkpoint import EpochCheckpointSaver

__all__ = ["WeightAverage"]

logger = logging.getLogger(__name__)


class WeightAverage:
    """Average ``network``'s weights over the iterations and save the average to ``path`` after every epoch (and
    where training stops mid-epoch).

    After iteration ``t`` the averaged weights become ``(1 - m_t) * average + m_t * weights``; ``m_t`` falls linearly
    from ``warmup_momentum`` to ``momentum`` over the first ``warmup_iterations``, then stays at ``momentum``, so the
    average covers about the last ``1 / momentum`` iterations. BatchNorm's running statistics are averaged the same
    way (ignite's ``handle_buffers="update"``). The saved file holds ``{"model": state_dict}`` with the network's own
    keys (a ``DistributedDataParallel`` network is averaged as its ``.module``; rank 0 writes).

    Args:
        network: the trained network (the one the optimizer updates).
        momentum: the weight of the newest iterate after the warm-up, in (0, 1); 0.002 averages about the last 500
            iterations.
        path: the checkpoint file (``models/model_ema.pt``).
        warmup_iterations: length of the ramp (>= 0; 0: ``momentum`` from the first iteration).
        warmup_momentum: the momentum of the first iteration, in [momentum, 1).
        resume: load the average from ``path`` at the start when the file exists (with the trainer's ``--resume``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        momentum: float,
        path: str | os.PathLike,
        warmup_iterations: int = 100,
        warmup_momentum: float = 0.5,
        resume: bool = False,
    ) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"WeightAverage: momentum must be in (0, 1), got {momentum}.")
        if warmup_iterations < 0:
            raise ValueError(f"WeightAverage: warmup_iterations must be >= 0, got {warmup_iterations}.")
        if not momentum <= warmup_momentum < 1.0:
            raise ValueError(
                f"WeightAverage: warmup_momentum must be in [momentum={momentum}, 1), got {warmup_momentum}."
            )
        self.path = Path(path)
        self.resume = resume and self.path.is_file()
        # a resumed average goes on at ``momentum``: a new ramp would forget it
        ramp = bool(warmup_iterations) and not self.resume
        self.ema = EMAHandler(
            network,
            momentum=momentum,
            momentum_warmup=warmup_momentum if ramp else None,
            warmup_iters=warmup_iterations if ramp else None,
            handle_buffers="update",
        )
        self.saver = EpochCheckpointSaver(self.path, {"model": self.ema.ema_model})

    @property
    def averaged(self) -> torch.nn.Module:
        """The network with the averaged weights (eval mode)."""
        return self.ema.ema_model

    def attach(self, engine: Engine) -> None:
        if self.resume:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            self.averaged.load_state_dict(state["model"])
            logger.info("weight average resumed from %s", self.path)
        # ignite's warm-up schedule sets engine.state.ema_momentum whatever the name: keep that name
        self.ema.attach(engine, name="ema_momentum", warn_if_exists=False)
        self.saver.attach(engine)
