"""WeightAverage: the moving average of the weights (with its warm-up ramp), BatchNorm statistics averaged too, the
checkpoint written after every epoch and loadable into the bare network, resuming, and refused arguments (the
bundle's use of it, ``--ema_momentum``, is tested in tests/bundle/test_unet_bundle.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from unet_monai.handlers import WeightAverage


def stepping_engine(net: torch.nn.Module) -> Engine:
    """An engine whose iteration ``t`` (from 1) sets every weight of ``net`` to ``t``: the average is then known."""

    def step(engine: Engine, batch: int) -> None:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(engine.state.iteration))

    return Engine(step)


def expected_average(momenta: list[float], start: float) -> float:
    average = start
    for t, m in enumerate(momenta, start=1):
        average = (1 - m) * average + m * t
    return average


def test_average_follows_the_ramp_then_the_momentum(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(-1.0)
    handler = WeightAverage(net, momentum=0.1, path=tmp_path / "ema.pt", warmup_iterations=5, warmup_momentum=0.5)
    engine = stepping_engine(net)
    handler.attach(engine)
    engine.run(range(4), max_epochs=3)  # 12 iterations
    ramp = [0.5 + (0.1 - 0.5) * (t - 1) / 4 for t in range(1, 6)]  # ignite's linear ramp over 5 iterations
    expected = expected_average(ramp + [0.1] * 7, start=-1.0)
    for p in handler.averaged.parameters():
        torch.testing.assert_close(p, torch.full_like(p, expected))
    assert all(float(p.detach().max()) == 12.0 for p in net.parameters())  # the trained network is untouched


def test_no_ramp_uses_the_momentum_from_the_first_iteration(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.0)
    handler = WeightAverage(net, momentum=0.25, path=tmp_path / "ema.pt", warmup_iterations=0)
    engine = stepping_engine(net)
    handler.attach(engine)
    engine.run(range(3), max_epochs=1)
    expected = expected_average([0.25] * 3, start=0.0)
    torch.testing.assert_close(handler.averaged.weight, torch.full((1, 2), expected))


def test_batchnorm_statistics_are_averaged_and_the_file_loads_into_the_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.ReLU())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    means: list[torch.Tensor] = []

    def step(engine: Engine, batch: torch.Tensor) -> None:
        optimizer.zero_grad()
        net(batch).mean().backward()
        optimizer.step()
        means.append(net[1].running_mean.clone())

    engine = Engine(step)
    path = tmp_path / "models" / "model_ema.pt"
    handler = WeightAverage(net, momentum=0.5, path=path, warmup_iterations=0)
    handler.attach(engine)
    batches = [torch.randn(2, 1, 6, 6, 6) * (i + 1) + i for i in range(4)]
    engine.run(batches, max_epochs=1)
    expected = torch.zeros(4)  # BatchNorm3d starts with running_mean 0
    for mean in means:
        expected = 0.5 * expected + 0.5 * mean
    torch.testing.assert_close(handler.averaged[1].running_mean, expected)
    assert not torch.allclose(handler.averaged[1].running_mean, net[1].running_mean)

    saved = torch.load(path, weights_only=True)  # written at the end of the epoch, {"model": state_dict}
    assert set(saved) == {"model"} and set(saved["model"]) == set(net.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.ReLU())
    fresh.load_state_dict(saved["model"])
    torch.testing.assert_close(fresh[0].weight, handler.averaged[0].weight)
    assert not list(path.parent.glob(".*.tmp"))


def test_resume_continues_the_saved_average_without_a_new_ramp(tmp_path: Path) -> None:
    path = tmp_path / "ema.pt"
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.0)
    first = WeightAverage(net, momentum=0.2, path=path, warmup_iterations=0)
    engine = stepping_engine(net)
    first.attach(engine)
    engine.run(range(2), max_epochs=1)
    saved = float(first.averaged.weight[0, 0])

    again = WeightAverage(net, momentum=0.2, path=path, warmup_iterations=50, resume=True)
    engine = stepping_engine(net)
    again.attach(engine)
    torch.testing.assert_close(again.averaged.weight, first.averaged.weight)  # loaded at attach
    engine.run(range(1), max_epochs=1)  # iteration 1 sets the weights to 1; momentum 0.2, not the ramp's 0.5
    assert float(again.averaged.weight[0, 0]) == pytest.approx(0.8 * saved + 0.2 * 1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"momentum": 0.0}, "momentum must be in \\(0, 1\\), got 0.0"),
        ({"momentum": 1.5}, "momentum must be in \\(0, 1\\), got 1.5"),
        ({"momentum": 0.1, "warmup_iterations": -1}, "warmup_iterations must be >= 0, got -1"),
        ({"momentum": 0.1, "warmup_momentum": 0.05}, "warmup_momentum must be in \\[momentum=0.1, 1\\), got 0.05"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WeightAverage(torch.nn.Linear(1, 1), path=tmp_path / "ema.pt", **kwargs)
