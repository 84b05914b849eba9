"""BatchNormAdaptInferer: statistics measured on the input, checked against torch's own BatchNorm written out."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer
from torch import nn

from unet_monai.inferers import BatchNormAdaptInferer, FlipEnsembleInferer, OverlapTileInferer, batch_norms
from unet_monai.networks import PaperUNet


def _shifted_batch_norm_net(spatial_dims: int = 3) -> PaperUNet:
    """A valid-padding PaperUNet with BatchNorm whose running statistics are far from any input's (as after training
    on another scan)."""
    torch.manual_seed(0)
    net = PaperUNet(spatial_dims, 1, 2, features=(4, 8), norm="batch")
    with torch.no_grad():
        for m in batch_norms(net):
            m.running_mean.uniform_(-2.0, 2.0)
            m.running_var.uniform_(0.1, 5.0)
    return net.eval()


def test_statistics_are_the_inputs_own():
    """conv -> BatchNorm: after adaptation the eval-mode output is the conv output normalised by the mean over the
    images of each image's own mean and unbiased variance over its voxels (one image per statistics pass)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 1, bias=False), nn.BatchNorm3d(2)).eval()
    x = torch.randn(2, 1, 5, 6, 7) * torch.tensor([3.0, 1.0]).view(2, 1, 1, 1, 1) + 10
    with torch.no_grad():
        out = BatchNormAdaptInferer()(x, net)
        y = net[0](x)
    mean = y.mean(dim=(2, 3, 4), keepdim=True).mean(0, keepdim=True)
    var = y.var(dim=(2, 3, 4), unbiased=True, keepdim=True).mean(0, keepdim=True)
    torch.testing.assert_close(out, (y - mean) / torch.sqrt(var + net[1].eps), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prior", [0.25, 0.5, 0.9])
def test_a_prior_mixes_trained_and_measured_statistics(prior):
    """``prior``: eval mode normalises by ``prior * trained + (1 - prior) * measured`` mean and variance; the trained
    statistics come back after the call."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 1, bias=False), nn.BatchNorm3d(2)).eval()
    with torch.no_grad():
        net[1].running_mean.copy_(torch.tensor([1.0, -3.0]))
        net[1].running_var.copy_(torch.tensor([0.5, 7.0]))
    trained = {k: v.clone() for k, v in net[1].state_dict().items()}
    x = torch.randn(1, 1, 5, 6, 7) * 3 + 10
    with torch.no_grad():
        out = BatchNormAdaptInferer(prior=prior)(x, net)
        y = net[0](x)
    mean = prior * trained["running_mean"] + (1 - prior) * y.mean(dim=(0, 2, 3, 4))
    var = prior * trained["running_var"] + (1 - prior) * y.var(dim=(0, 2, 3, 4), unbiased=True)
    expected = (y - mean.view(1, 2, 1, 1, 1)) / torch.sqrt(var.view(1, 2, 1, 1, 1) + net[1].eps)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for name, value in net[1].state_dict().items():
        torch.testing.assert_close(value, trained[name])


@pytest.mark.parametrize("prior", [-0.1, 1.0])
def test_a_prior_outside_zero_to_one_is_refused(prior):
    with pytest.raises(ValueError, match=r"--adapt_norm_prior.*\[0, 1\)"):
        BatchNormAdaptInferer(prior=prior)


def test_adapted_prediction_ignores_an_affine_intensity_change():
    """A valid-padding net's first convolution turns ``a * x + b`` into a per-channel affine map of its output, which
    statistics measured on the input remove: the adapted prediction is the same for both images, the trained
    statistics' prediction is not."""
    net = _shifted_batch_norm_net()
    shape = net.input_shape_for((8, 8, 8))
    x = torch.randn(1, 1, *shape)
    shifted = 4.0 * x + 50.0
    adapt = BatchNormAdaptInferer(SimpleInferer())
    with torch.no_grad():
        torch.testing.assert_close(adapt(shifted, net), adapt(x, net), atol=2e-4, rtol=1e-4)
        plain = (net(shifted) - net(x)).abs().max()
    assert plain > 1.0


def test_trained_statistics_momenta_and_modes_come_back():
    net = _shifted_batch_norm_net()
    net.decoder.train()  # a mixed state, kept as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = {name: m.training for name, m in net.named_modules()}
    x = torch.randn(1, 1, *net.input_shape_for((8, 8, 8)))
    with torch.no_grad():
        BatchNormAdaptInferer()(x, net)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert all(m.momentum == 0.1 for m in batch_norms(net))


class _FailingInferer(SimpleInferer):
    def __call__(self, inputs, network, *args, **kwargs):
        network(inputs)  # the statistics move
        raise RuntimeError("tile failed")


def test_statistics_come_back_when_the_prediction_fails():
    net = _shifted_batch_norm_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 1, *net.input_shape_for((8, 8, 8)))
    with pytest.raises(RuntimeError, match="tile failed"), torch.no_grad():
        BatchNormAdaptInferer(_FailingInferer(), stats_inferer=SimpleInferer())(x, net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training and all(m.momentum == 0.1 for m in batch_norms(net))


class _ModeRecorder(nn.Module):
    """Wraps a PaperUNet as ``.module`` (as DistributedDataParallel does) and records its mode at every call."""

    def __init__(self, module: PaperUNet) -> None:
        super().__init__()
        self.module = module
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.module.training)
        return self.module(x)


def test_one_statistics_pass_in_train_mode_then_the_flip_ensemble_in_eval_mode():
    """With a flip ensemble as the predicting inferer, the statistics come from one plain pass over the tiles, one
    tile per forward pass whatever the inferer's batch; the prediction equals the ensemble run on a network that
    holds those statistics."""
    x = torch.randn(1, 1, 30, 28, 26)
    net = _ModeRecorder(_shifted_batch_norm_net()).eval()
    tiles = OverlapTileInferer(roi_size=(8, 8, 8), sw_batch_size=2)
    flips = FlipEnsembleInferer(tiles, flip_axes=[0, 1])
    with torch.no_grad():
        adapted = BatchNormAdaptInferer(flips, stats_inferer=tiles)(x, net)
    n = len(net.modes) // 3  # the statistics pass one tile at a time, then 4 flipped copies two tiles at a time
    assert n > 1 and net.modes == [True] * n + [False] * (2 * n)

    reference = _shifted_batch_norm_net()
    for m in batch_norms(reference):
        m.reset_running_stats()
        m.momentum = None
    reference.train()
    with torch.no_grad():
        OverlapTileInferer(roi_size=(8, 8, 8), sw_batch_size=1)(x, reference)
        reference.eval()
        expected = flips(x, reference)
    torch.testing.assert_close(adapted, expected)


@pytest.mark.parametrize("norm", [None, "instance"])
def test_a_network_without_batch_norm_statistics_is_refused(norm):
    net = PaperUNet(3, 1, 2, features=(4, 8), norm=norm).eval()
    x = torch.randn(1, 1, *net.input_shape_for((8, 8, 8)))
    with pytest.raises(ValueError, match=r"--adapt_norm True.*this PaperUNet has none.*drop --adapt_norm"):
        BatchNormAdaptInferer()(x, net)
