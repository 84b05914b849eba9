"""A wall-clock training budget: the learning rate follows a cosine over the run, and training stops at the budget.

Why our own: ignite's ``TimeLimit`` stops a run, but every scheduler in torch and ignite counts steps or epochs, so
a run cut by time stops wherever the epoch schedule happens to be (with ``epochs`` set high, at the full learning
rate). ``TimeBudget`` anneals by whichever runs out first, the time or the engine's iterations, so a run of any
speed ends at ``final_lr_fraction`` of the rate. In a distributed run rank 0's clock is broadcast every iteration,
so all ranks use the same rate and stop at the same iteration (ignite's per-rank ``TimeLimit`` can stop one rank
before another).
"""

from __future__ import annotations

import logging
import math
import time

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from tqdm import tqdm

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)

_BAR_FORMAT = "{desc}: {n:.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"  # tqdm writes the postfix as ", ..."


class TimeBudget:
    """Anneal ``optimizer``'s learning rates by a cosine over the run, and stop the engine after ``minutes``.

    At the start of each iteration every parameter group gets
    ``lr = base * (f + (1 - f) * (1 + cos(pi * t)) / 2)``, with ``base`` the group's rate when the handler is made,
    ``f = final_lr_fraction`` and ``t`` the fraction of the run done: the larger of the elapsed fraction of the
    budget and the fraction of the engine's ``max_epochs * epoch_length`` iterations (0 to 1). After the iteration
    during which the budget runs out, the engine terminates. The clock starts at ``Events.STARTED`` (after data caching,
    which happens when the engine is built), and a resumed run gets the whole budget again.

    Args:
        minutes: the budget (wall clock, > 0).
        optimizer: the optimizer whose rates to set; None only stops the engine (like ignite's ``TimeLimit``).
        final_lr_fraction: the rate at the end of the budget as a fraction of the starting rate, in [0, 1]; 1 keeps
            the rate constant.
        progress: show one bar for the whole run on rank 0 (``tqdm``, stderr): the fraction done as above, the
            time spent and left, the epoch and iteration; in place of ignite's bar per epoch, which says
            nothing about when a run cut by time will end.
    """

    def __init__(
        self,
        minutes: float,
        optimizer: torch.optim.Optimizer | None = None,
        final_lr_fraction: float = 1.0,
        progress: bool = False,
    ) -> None:
        if not minutes > 0:
            raise ValueError(f"TimeBudget: minutes must be > 0, got {minutes}.")
        if not 0.0 <= final_lr_fraction <= 1.0:
            raise ValueError(f"TimeBudget: final_lr_fraction must be in [0, 1], got {final_lr_fraction}.")
        self.seconds = 60.0 * float(minutes)
        self.optimizer = optimizer
        self.final_lr_fraction = float(final_lr_fraction)
        self.progress = progress
        self._bar: tqdm | None = None
        self._start = 0.0
        # the starting rates, taken now: a resumed run loads the annealed rates into the optimizer at STARTED
        self._base = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups] if optimizer else []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._set_rates)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop_when_spent)
        if self.progress:
            engine.add_event_handler(Events.COMPLETED, self._close_bar)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_bar)

    def elapsed(self) -> float:
        """Seconds since the run started, by rank 0's clock in a distributed run (a collective call there)."""
        seconds = time.perf_counter() - self._start
        if idist.get_world_size() > 1:
            shared = idist.broadcast(torch.tensor(seconds, dtype=torch.float64), src=0)
            assert isinstance(shared, torch.Tensor)
            seconds = float(shared.item())
        return seconds

    def lr_factor(self, elapsed_s: float, done: float = 0.0) -> float:
        """The factor on the starting rate after ``elapsed_s`` seconds with the fraction ``done`` of the iterations
        run: 1 at the start, ``final_lr_fraction`` when either the budget or the iterations are spent."""
        t = min(1.0, max(0.0, elapsed_s / self.seconds, done))
        f = self.final_lr_fraction
        return f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        if self.progress and idist.get_rank() == 0:
            budget = f"{self.seconds / 60.0:g} min"
            self._bar = tqdm(total=100, desc=f"training (budget {budget})", unit="%", bar_format=_BAR_FORMAT)

    @staticmethod
    def _done(engine: Engine, iterations: int) -> float:
        """The fraction of the engine's ``max_epochs * epoch_length`` iterations that ``iterations`` is."""
        total = (engine.state.max_epochs or 0) * (engine.state.epoch_length or 0)
        return iterations / total if total else 0.0

    def _set_rates(self, engine: Engine) -> None:
        if self.optimizer is None or self.final_lr_fraction == 1.0:
            return
        factor = self.lr_factor(self.elapsed(), self._done(engine, engine.state.iteration - 1))
        for group, base in zip(self.optimizer.param_groups, self._base):
            group["lr"] = base * factor

    def _stop_when_spent(self, engine: Engine) -> None:
        elapsed = self.elapsed()
        if self._bar is not None:
            done = min(1.0, max(elapsed / self.seconds, self._done(engine, engine.state.iteration)))
            self._bar.set_postfix_str(f"epoch {engine.state.epoch}, iteration {engine.state.iteration}", refresh=False)
            self._bar.update(round(100.0 * done, 1) - self._bar.n)  # redraws at most every 0.1 s (tqdm)
        if elapsed >= self.seconds:
            logger.info(
                "Training stopped at its time budget of %.1f min (iteration %d, epoch %d).",
                self.seconds / 60.0, engine.state.iteration, engine.state.epoch,
            )  # fmt: skip
            engine.terminate()

    def _close_bar(self, engine: Engine, *_: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
