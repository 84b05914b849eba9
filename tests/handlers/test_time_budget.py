"""TimeBudget: the cosine over time or iterations, whichever runs out first, and the stop at the budget (the
bundle's use of it is tested in tests/bundle/test_unet_bundle.py)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from ignite.engine import Engine, Events

from unet_monai.handlers import TimeBudget


def cosine(f: float, t: float) -> float:
    return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t))


def test_lr_factor_is_the_cosine_of_the_larger_fraction() -> None:
    budget = TimeBudget(minutes=1.0, final_lr_fraction=0.1)
    assert budget.lr_factor(0.0) == pytest.approx(1.0)
    assert budget.lr_factor(30.0) == pytest.approx(0.55)  # half the time: half-way between 1 and 0.1
    assert budget.lr_factor(60.0) == pytest.approx(0.1)
    assert budget.lr_factor(600.0) == pytest.approx(0.1)  # past the budget: stays at the final rate
    assert budget.lr_factor(15.0, done=0.5) == pytest.approx(0.55)  # the iterations are further along
    assert budget.lr_factor(45.0, done=0.5) == pytest.approx(cosine(0.1, 0.75))


def test_iteration_bound_run_follows_the_cosine_per_iteration() -> None:
    """With a budget far longer than the run, the rate at each iteration is the cosine over the iterations done."""
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    rates: list[float] = []
    engine = Engine(lambda e, b: rates.append(optimizer.param_groups[0]["lr"]))
    TimeBudget(minutes=60.0, optimizer=optimizer, final_lr_fraction=0.0).attach(engine)
    engine.run(range(4), max_epochs=2)
    expected = [0.01 * cosine(0.0, i / 8) for i in range(8)]
    assert rates == pytest.approx(expected, rel=1e-3, abs=1e-7)
    assert engine.state.epoch == 2  # not stopped


def test_time_bound_run_stops_at_the_budget_with_a_lower_rate() -> None:
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    rates: list[float] = []

    def step(engine: Engine, batch: int) -> None:
        rates.append(optimizer.param_groups[0]["lr"])
        time.sleep(0.02)

    engine = Engine(step)
    TimeBudget(minutes=0.25 / 60, optimizer=optimizer, final_lr_fraction=0.2).attach(engine)
    started = time.perf_counter()
    engine.run(range(10), max_epochs=10_000)  # 100,000 iterations unless the budget stops it
    assert engine.should_terminate and engine.state.iteration < 100_000
    assert time.perf_counter() - started >= 0.25
    assert rates[0] == pytest.approx(1.0, abs=0.05)
    assert all(b <= a for a, b in zip(rates, rates[1:]))  # only ever annealed
    assert 0.2 <= rates[-1] < 0.9


def test_constant_rate_when_the_final_fraction_is_one() -> None:
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    engine = Engine(lambda e, b: None)
    TimeBudget(minutes=1.0, optimizer=optimizer).attach(engine)
    engine.run(range(3), max_epochs=2)
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_a_resumed_run_anneals_from_the_starting_rate() -> None:
    """The base rates are taken when the handler is made: a checkpoint's annealed rate loaded at STARTED (as
    CheckpointLoader does) does not become the new start."""
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    engine = Engine(lambda e, b: None)
    budget = TimeBudget(minutes=60.0, optimizer=optimizer, final_lr_fraction=0.0)

    @engine.on(Events.STARTED)
    def load_annealed_checkpoint(engine: Engine) -> None:
        optimizer.param_groups[0]["lr"] = 0.01
        engine.state.iteration, engine.state.epoch = 4, 2  # the run resumes after epoch 2 of 4

    budget.attach(engine)
    seen: list[float] = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(optimizer.param_groups[0]["lr"]))
    engine.run(range(2), max_epochs=4)
    assert seen == pytest.approx([cosine(0.0, i / 8) for i in range(4, 8)], rel=1e-3, abs=1e-7)


@pytest.mark.parametrize(("minutes", "fraction", "message"), [(0, 0.5, "minutes"), (1, 1.5, "final_lr_fraction")])
def test_bad_arguments_are_refused(minutes: float, fraction: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimeBudget(minutes=minutes, final_lr_fraction=fraction)


def test_progress_bar_shows_the_run_done_by_time_or_iterations(capsys: pytest.CaptureFixture[str]) -> None:
    """``progress=True``: one bar over the whole run on stderr, at 100 % when the iterations end before the budget
    (the larger fraction, as the rate's cosine), closed at the end."""
    engine = Engine(lambda e, b: None)
    budget = TimeBudget(minutes=60.0, progress=True)
    budget.attach(engine)
    engine.run(range(5), max_epochs=4)
    err = capsys.readouterr().err
    assert "training (budget 60 min): 100%" in err and "epoch 4, iteration 20" in err
    assert budget._bar is None  # closed


def test_progress_bar_of_a_run_stopped_by_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine(lambda e, b: time.sleep(0.02))
    TimeBudget(minutes=0.2 / 60, progress=True).attach(engine)
    engine.run(range(10), max_epochs=10_000)
    err = capsys.readouterr().err
    assert "training (budget 0.00333333 min): 100%" in err  # the budget spent, however few iterations ran
    assert "epoch 10000" not in err
