"""PaperUNet's slabbed inference pass (unet_monai/networks/slabs.py): the same output as the whole-map pass, for
every row-local configuration; the whole-map pass wherever slabs would not give the same result."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from unet_monai.networks import PaperUNet
from unet_monai.networks.blocks import DoubleConv
from unet_monai.networks.slabs import double_conv_in_slabs, row_local, slab_bounds


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
    x = torch.randn(2, 1, *net.input_shape_for((37, 9, 14)[:spatial_dims]))
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


# per-level pool and kernel sizes, and per-level widths: the row axis (axis 0) without context (kernel 1), without
# pooling (pool 1) or with a wider halo (kernel 5), the other axes anisotropic, and Cicek's channel plan
ANISOTROPIC = {
    "kernel-1-along-rows-valid": dict(
        spatial_dims=3, pool_sizes=[[1, 2, 2], [2, 2, 2]], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    ),
    "kernel-1-along-rows-same": dict(
        spatial_dims=3,
        padding="same",
        pool_sizes=[[1, 2, 2], [2, 2, 2]],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    ),
    "pool-1-along-rows-valid": dict(spatial_dims=2, pool_sizes=[[1, 2], [1, 2]], upsample="nearest"),
    "pool-1-along-rows-same": dict(spatial_dims=2, padding="same", pool_sizes=[[1, 2], [1, 2]]),
    "thick-slices-last-axis": dict(
        spatial_dims=3, pool_sizes=[[2, 2, 1], [2, 2, 2]], kernel_sizes=[[3, 3, 1], [3, 3, 3], [3, 3, 3]]
    ),
    "kernel-5-along-rows-valid": dict(spatial_dims=2, kernel_sizes=[[5, 3], [5, 3], 3]),
    "kernel-5-along-rows-same": dict(spatial_dims=2, padding="same", kernel_sizes=[[5, 3], [5, 3], 3]),
    "pool-3-along-rows": dict(spatial_dims=2, pool_sizes=[[3, 2], 2], upsample="nearest"),
    "cicek-channel-plan": dict(spatial_dims=3, mid_features=(2, 3, 6), up_features=(6, 12)),
}


WITH_BATCH_NORM = ("kernel-1-along-rows-same", "thick-slices-last-axis", "cicek-channel-plan")  # folded into convs


@pytest.mark.parametrize("name", list(ANISOTROPIC))
def test_anisotropic_slabbed_pass_equals_the_whole_map_pass(name):
    torch.manual_seed(0)
    norm = "batch" if name in WITH_BATCH_NORM else None
    net = PaperUNet(in_channels=1, out_channels=3, features=(3, 6, 12), norm=norm, **ANISOTROPIC[name])
    randomise_batch_norm(net)
    net.eval()
    x = torch.randn(2, 1, *net.input_shape_for((37, 9, 6)[: net.spatial_dims]))
    whole, slabbed = whole_and_slabbed(net, x)
    assert slabbed.shape == whole.shape
    assert len(slab_bounds(whole.shape[2], net.inference_slabs)) > 2  # several slabs, a short last one
    torch.testing.assert_close(slabbed, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [(1, 3), (5, 3), (7, 1)], ids=lambda k: f"kernel{k[0]}x{k[1]}")
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_double_conv_in_slabs_for_every_row_count(kernel, padding):
    """Every split of the rows, short last slabs included: the halo of a kernel of k rows is k // 2 rows per side,
    and where it reaches past the map the layer's own zero padding (same) is the real one."""
    torch.manual_seed(0)
    block = DoubleConv(2, 2, 3, padding, None, kernel, mid_channels=4).eval()
    for rows in range(2 * kernel[0] + 6, 2 * kernel[0] + 18):  # every remainder of the slab size (4 rows)
        x = torch.randn(1, 2, rows, 7)
        with torch.no_grad():
            torch.testing.assert_close(double_conv_in_slabs(block, x, 8), block(x), atol=1e-6, rtol=1e-6)
