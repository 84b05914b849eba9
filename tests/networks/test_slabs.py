"""PaperUNet's slabbed inference pass (unet_monai/networks/slabs.py): the same output as the whole-map pass, for
every row-local configuration; the whole-map pass wherever slabs would not give the same result."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from unet_monai.networks import PaperUNet
from unet_monai.networks.slabs import row_local, slab_bounds


def randomise_batch_norm(net: nn.Module) -> None:
    """Running statistics and affine parameters away from their defaults, so that folding them matters."""
    generator = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) - 0.5)


def whole_and_slabbed(net: PaperUNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's output without and with slabs (``inference_slabs`` 0 and the default), without autograd."""
    slabs = net.inference_slabs
    with torch.no_grad():
        assert net._slabs_apply(x)
        slabbed = net(x)
        net.inference_slabs = 0
        assert not net._slabs_apply(x)
        whole = net(x)
    net.inference_slabs = slabs
    return whole, slabbed


CASES = list(itertools.product((2, 3), ("valid", "same"), (None, "batch"), ("deconv", "nearest")))


@pytest.mark.parametrize("spatial_dims,padding,norm,upsample", CASES, ids=lambda v: str(v))
def test_slabbed_pass_equals_the_whole_map_pass(spatial_dims, padding, norm, upsample):
    torch.manual_seed(0)
    net = PaperUNet(spatial_dims, 1, 3, features=(3, 6, 12), padding=padding, norm=norm, upsample=upsample)
    randomise_batch_norm(net)
    net.eval()
    # rows that do not split evenly into slabs (a short last slab), other axes of other sizes, batch 2
    rows = net.input_shape_for((37,))[0]
    x = torch.randn(2, 1, rows, *net.input_shape_for((9, 14)[: spatial_dims - 1]))
    whole, slabbed = whole_and_slabbed(net, x)
    assert slabbed.shape == whole.shape
    torch.testing.assert_close(slabbed, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_slabbed_pass_under_bf16_autocast_and_channels_last(spatial_dims, padding):
    torch.manual_seed(0)
    layout = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    net = PaperUNet(spatial_dims, 1, 2, features=(4, 8, 16), padding=padding, norm="batch", final_act="softmax")
    randomise_batch_norm(net)
    net = net.eval().to(memory_format=layout)
    x = torch.randn(1, 1, *net.input_shape_for((40,) * spatial_dims)).contiguous(memory_format=layout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole, slabbed = whole_and_slabbed(net, x)
    assert slabbed.dtype == whole.dtype
    torch.testing.assert_close(slabbed.float(), whole.float(), atol=2e-2, rtol=0)  # probabilities, bf16 rounding
    assert (slabbed.argmax(1) == whole.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": "instance"}, {"norm": ("group", {"num_groups": 2})}, {"upsample": "linear"}, {"final_kernel_size": 3}],
    ids=["instance-norm", "group-norm", "linear-upsampling", "3x3-head"],
)
def test_not_row_local_networks_keep_the_whole_map_pass(kwargs):
    """Normalisations over the whole map and linear upsampling would change in slabs: they are never slabbed."""
    net = PaperUNet(2, 1, 2, features=(4, 8, 16), padding="same", **kwargs).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert not net._slabs_apply(x)
        out = net(x)
    assert out.shape == (1, 2, 64, 64)


def test_training_autograd_and_small_inputs_keep_the_whole_map_pass():
    net = PaperUNet(2, 1, 2, features=(4, 8, 16), padding="same", norm="batch")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert not net._slabs_apply(x)  # training mode: BatchNorm uses the batch's statistics
    net.eval()
    assert not net._slabs_apply(x)  # autograd on: the training path
    with torch.no_grad():
        assert net._slabs_apply(x)
        assert not net._slabs_apply(torch.randn(1, 1, 4, 64))  # fewer rows than two slabs
        net.inference_slabs = 1
        assert not net._slabs_apply(x)


def test_row_local_blocks():
    net = PaperUNet(3, 1, 2, features=(4, 8), norm="batch").eval()
    assert row_local(net.encoder.stem) and row_local(net.decoder.ups[-1]) and row_local(net.head)
    assert not row_local(net.encoder.stem.train())
    assert not row_local(PaperUNet(3, 1, 2, features=(4, 8), norm="instance").eval().encoder.stem)


@pytest.mark.parametrize("rows,slabs", [(64, 8), (37, 8), (5, 8), (9, 2), (1, 4)])
def test_slab_bounds_cover_every_row_once(rows, slabs):
    bounds = slab_bounds(rows, slabs)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert len(bounds) <= slabs
    assert all(hi - lo >= 4 for lo, hi in bounds[:-1])
