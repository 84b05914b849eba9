"""FlipEnsembleInferer: test-time flips and rotations, checked against torch.rot90 / torch.flip written out."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from unet_monai.inferers import FlipEnsembleInferer, OverlapTileInferer, grid_symmetries
from unet_monai.networks import PaperUNet


def test_symmetry_counts():
    assert len(grid_symmetries(2, rotations=True)) == 8
    assert len(grid_symmetries(2, rotations=False)) == 4
    assert len(grid_symmetries(3, rotations=False)) == 8
    assert len(set(grid_symmetries(2, rotations=True))) == 8
    with pytest.raises(ValueError, match="rotations are offered in 2D only"):
        grid_symmetries(3, rotations=True)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 1"):
        grid_symmetries(1, rotations=False)


def test_flip_axes_limit_the_flips_to_those_axes():
    symmetries = grid_symmetries(3, rotations=False, flip_axes=[0, 1])
    assert sorted(axes for axes, _ in symmetries) == [(), (0,), (0, 1), (1,)]
    assert len(grid_symmetries(2, rotations=True, flip_axes=[1])) == 4  # two flips, each with and without transpose
    assert grid_symmetries(3, rotations=False, flip_axes=[]) == [((), False)]  # the plain prediction alone


@pytest.mark.parametrize(
    "flip_axes", [[0, 3], [1, 1], [-1], "null"], ids=["axis_out_of_range", "repeated", "negative", "string"]
)
def test_bad_flip_axes_are_refused(flip_axes):
    with pytest.raises(ValueError, match="flip_axes must be"):
        grid_symmetries(3, rotations=False, flip_axes=flip_axes)


def test_3d_ensemble_over_two_axes_averages_their_four_flips():
    torch.manual_seed(0)
    net = nn.Conv3d(1, 2, 3, padding=1).eval()
    x = torch.randn(1, 1, 6, 5, 4)
    with torch.no_grad():
        logits = FlipEnsembleInferer(flip_axes=[0, 1])(x, net)
        expected = torch.zeros(1, 2, 6, 5, 4)
        for axes in ([], [2], [3], [2, 3]):
            y = torch.flip(x, axes) if axes else x
            p = torch.softmax(net(y), 1)
            expected += torch.flip(p, axes) if axes else p
    torch.testing.assert_close(torch.softmax(logits, 1), expected / 4, atol=1e-6, rtol=1e-5)


def test_bad_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of .* got 'relu'"):
        FlipEnsembleInferer(activation="relu")


def _dihedral_mean(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the 8 rotations and reflections, written with torch.rot90 (an independent route)."""
    total = torch.zeros(())
    for k in range(4):
        for mirrored in (False, True):
            y = torch.flip(x, [3]) if mirrored else x
            p = torch.softmax(net(torch.rot90(y, k, (2, 3))), 1)
            p = torch.rot90(p, -k, (2, 3))
            total = total + (torch.flip(p, [3]) if mirrored else p)
    return total / 8


def test_2d_ensemble_equals_the_mean_over_the_dihedral_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, (1, 3), padding=(0, 1))).eval()
    x = torch.randn(2, 1, 12, 17)  # not square: the transposed copies have another shape
    with torch.no_grad():
        logits = FlipEnsembleInferer()(x, net)
        expected = _dihedral_mean(net, x)
        plain = torch.softmax(net(x), 1)
    assert logits.shape == (2, 3, 12, 17)
    torch.testing.assert_close(torch.softmax(logits, 1), expected, atol=1e-6, rtol=1e-5)
    assert (torch.softmax(logits, 1) - plain).abs().max() > 1e-3  # the network is not symmetric: averaging matters


def test_3d_ensemble_averages_the_eight_flips_and_sigmoid_outputs():
    torch.manual_seed(0)
    net = nn.Conv3d(1, 1, (3, 1, 1), padding=(1, 0, 0)).eval()
    x = torch.randn(1, 1, 6, 5, 4)
    with torch.no_grad():
        logits = FlipEnsembleInferer(activation="sigmoid")(x, net)
        expected = torch.zeros_like(x)
        for axes in ([], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]):
            y = torch.flip(x, axes) if axes else x
            p = torch.sigmoid(net(y))
            expected += torch.flip(p, axes) if axes else p
    torch.testing.assert_close(torch.sigmoid(logits), expected / 8, atol=1e-6, rtol=1e-5)


def test_equivariant_network_is_unchanged_and_metadata_is_kept():
    net = nn.Conv2d(1, 2, 1).eval()  # a 1x1 convolution commutes with every flip and rotation
    affine = torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0]))
    x = MetaTensor(torch.randn(1, 1, 9, 7), affine=affine)
    with torch.no_grad():
        logits = FlipEnsembleInferer()(x, net)
        plain = torch.softmax(net(x.as_tensor()), 1)
    torch.testing.assert_close(torch.softmax(logits.as_tensor(), 1), plain, atol=1e-6, rtol=1e-5)
    assert isinstance(logits, MetaTensor)
    torch.testing.assert_close(logits.affine, x.affine)


def test_wraps_overlap_tile_inference_of_a_valid_network():
    torch.manual_seed(0)
    net = PaperUNet(2, 1, 2, features=(4, 8, 16)).eval()
    x = torch.randn(1, 1, 40, 29)
    tiles = OverlapTileInferer(16)
    with torch.no_grad():
        logits = FlipEnsembleInferer(tiles)(x, net)
        expected = torch.zeros(1, 2, 40, 29)
        for k in range(4):
            for mirrored in (False, True):
                y = torch.flip(x, [3]) if mirrored else x
                p = torch.rot90(torch.softmax(tiles(torch.rot90(y, k, (2, 3)), net), 1), -k, (2, 3))
                expected += torch.flip(p, [3]) if mirrored else p
    torch.testing.assert_close(torch.softmax(logits, 1), expected / 8, atol=1e-5, rtol=1e-4)
