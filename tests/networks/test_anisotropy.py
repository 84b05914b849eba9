"""PaperUNet with per-level pool and kernel sizes (anisotropic voxels) and per-level channel widths: per-axis shape
arithmetic against real forward passes, the context, error messages, check_fits, the defaults unchanged, argument
validation, TorchScript, channels-last, bf16 autocast and gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from unet_monai.networks import PaperUNet

# name -> PaperUNet arguments (in_channels 1, out_channels 2); tiny widths keep every forward pass cheap
CONFIGS = {
    "2d-valid-pool-1-along-axis-1": dict(
        spatial_dims=2, features=(2, 4, 8), pool_sizes=[[2, 1], 2], kernel_sizes=[[3, 1], 3, 3]
    ),
    "2d-valid-pool-3": dict(spatial_dims=2, features=(2, 4, 8), pool_sizes=[[3, 2], 2], upsample="nearest"),
    "2d-same-kernel-5": dict(spatial_dims=2, features=(2, 4, 8), padding="same", kernel_sizes=[[5, 3], 3, [1, 3]]),
    "3d-valid-thick-slices": dict(
        spatial_dims=3,
        features=(2, 4, 8),
        pool_sizes=[[2, 2, 1], [2, 2, 2]],
        kernel_sizes=[[3, 3, 1], [3, 3, 3], [3, 3, 3]],
    ),
    "3d-same-thick-slices": dict(
        spatial_dims=3,
        features=(2, 4, 8),
        padding="same",
        pool_sizes=[[2, 2, 1], [2, 2, 2]],
        kernel_sizes=[[3, 3, 1], [3, 3, 3], [3, 3, 3]],
    ),
    "3d-valid-axis-0-thick-linear": dict(
        spatial_dims=3,
        features=(2, 4, 8),
        pool_sizes=[[1, 2, 2], [2, 2, 2]],
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        upsample="linear",
        norm="batch",
    ),
    "3d-valid-channel-plan": dict(
        spatial_dims=3, features=(4, 8, 16), mid_features=(2, 4, 8), up_features=(8, 16), norm="batch"
    ),
}
IDS = list(CONFIGS)


def make(name: str, **overrides) -> PaperUNet:
    torch.manual_seed(0)
    return PaperUNet(in_channels=1, out_channels=2, **{**CONFIGS[name], **overrides})


def expected_context(net: PaperUNet, axis: int) -> int:
    """Voxels lost per side along ``axis`` from the kernel and pool sizes alone (valid padding): each level's two
    convolutions lose ``k - 1`` voxels per side at that level's resolution, the decoder's as many again."""
    kernels = [k[axis] for k in net.kernel_sizes]
    pools = [p[axis] for p in net.pool_sizes]
    scale = [math.prod(pools[:level]) for level in range(len(kernels))]
    decoder_and_encoder = sum(2 * (k - 1) * s for k, s in zip(kernels[:-1], scale))
    return decoder_and_encoder + (kernels[-1] - 1) * scale[-1]


# ------------------------------------------------------------------------------- per-axis shape arithmetic
@pytest.mark.parametrize("name", IDS)
def test_per_axis_shapes_match_forward(name):
    net = make(name).eval()
    dims = net.spatial_dims
    smallest = net.min_input_shape
    assert net.input_shape_for((1,) * dims) == smallest
    grid = net.pool_grid
    context = net.context_per_axis
    for axis in range(dims):
        if net.padding == "valid":
            assert context[axis] == expected_context(net, axis)
        bigger = list(smallest)
        bigger[axis] += grid[axis]  # the next valid size along this axis
        for shape in (smallest, tuple(bigger)):
            with torch.no_grad():
                out = net(torch.randn(1, 1, *shape))
            expected = net.output_shape(shape)
            assert tuple(out.shape[2:]) == expected, shape
            assert all(i - o == 2 * c for i, o, c in zip(shape, expected, context)), (shape, expected)
        # along this axis (the others smallest), exactly the sizes smallest + n * grid are accepted
        for size in range(1, smallest[axis] + 2 * grid[axis] + 2):
            shape = list(smallest)
            shape[axis] = size
            valid = size >= smallest[axis] and (size - smallest[axis]) % grid[axis] == 0
            near = net.nearest_valid_input_sizes(size, axis)
            assert (near == (size,)) == valid, (axis, size, near)
            if valid:
                assert net.output_shape(shape)[axis] == net.output_shape(smallest)[axis] + (size - smallest[axis])
            else:
                with pytest.raises(ValueError, match=rf"input size {size} along axis {axis} is not valid"):
                    net.output_shape(shape)
        wanted = list(net.output_shape(smallest))
        wanted[axis] += 1
        assert net.input_shape_for(wanted) == tuple(bigger)


@pytest.mark.parametrize("name", ["3d-valid-thick-slices", "2d-valid-pool-1-along-axis-1"])
def test_invalid_size_forward_names_the_axis_and_the_nearest_sizes(name):
    net = make(name)
    shape = list(net.min_input_shape)
    axis = net.spatial_dims - 1
    shape[0] += 1  # axis 0: one too many, between two valid sizes
    low, high = net.min_input_shape[0], net.min_input_shape[0] + net.pool_grid[0]
    with pytest.raises(ValueError) as info:
        net(torch.zeros(1, 1, *shape))
    message = str(info.value)
    assert f"input size {shape[0]} along axis 0 is not valid: nearest valid sizes {low} and {high}" in message
    assert f"along axis {axis}" not in message  # the last axis is fine


def test_paper_error_message_per_axis():
    net = PaperUNet(2, 1, 2)
    with pytest.raises(ValueError, match="input size 570 along axis 0 is not valid: nearest valid sizes 556 and 572"):
        net.output_shape((570, 572))
    with pytest.raises(ValueError, match=r"input size 100 along axis 1 is not valid: nearest valid sizes 188 \("):
        net.output_shape((572, 100))


def test_same_padding_divides_by_the_product_of_each_axis_pool_sizes():
    net = PaperUNet(3, 1, 2, features=(2, 4, 8), padding="same", pool_sizes=[[2, 2, 1], [2, 1, 1]]).eval()
    assert net.pool_grid == (4, 2, 1)
    assert net.context == (0, 0, 0) and net.context_per_axis == (0, 0, 0)
    assert net.min_input_shape == (4, 2, 1)
    for shape in [(8, 6, 5), (4, 2, 1), (12, 10, 3)]:
        with torch.no_grad():
            assert net(torch.randn(1, 1, *shape)).shape[2:] == shape
    with pytest.raises(ValueError, match="input size 6 along axis 0 is not valid: nearest valid sizes 4 and 8"):
        net.output_shape((6, 6, 5))
    with pytest.raises(ValueError, match=r"input size 5 along axis 1 is not valid: nearest valid sizes 4 and 6 "):
        net.output_shape((8, 5, 5))


def test_context_is_an_int_for_isotropic_configurations_and_a_tuple_otherwise():
    iso = PaperUNet(3, 1, 2, features=(2, 4, 8), pool_sizes=[[2, 2, 2], 2], kernel_sizes=[3, [3, 3, 3], 3])
    assert iso.isotropic
    assert type(iso.context) is int and iso.context == 20
    assert iso.context_per_axis == (20, 20, 20)
    assert type(PaperUNet(2, 1, 2, features=(2, 4), padding="same").context) is int
    ct = PaperUNet(
        3,
        1,
        2,
        features=(8, 16, 32, 64),
        pool_sizes=[[2, 2, 1], [2, 2, 1], [2, 2, 2]],
        kernel_sizes=[[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]],
    )
    assert not ct.isotropic
    assert ct.context == ct.context_per_axis == (44, 44, 8)  # the class docstring's example
    assert ct.pool_grid == (8, 8, 2)


# ------------------------------------------------------------------------------------------- check_fits
def test_check_fits_names_the_axis_the_size_and_the_minimum():
    net = make("3d-valid-thick-slices")
    minimum = net.min_input_shape
    net.check_fits(minimum)  # the smallest valid input fits
    net.check_fits((minimum[0] + 1, 500, minimum[2] + 3))  # any larger size fits, valid or not
    too_thin = (300, 300, minimum[2] - 1)
    with pytest.raises(ValueError, match=rf"at least {minimum[2]} voxels along axis 2 .* got {minimum[2] - 1} "):
        net.check_fits(too_thin)
    with pytest.raises(ValueError, match=rf"at least {minimum[0]} voxels along axis 0 .* got 5 "):
        net.check_fits((5, 300, 1))  # the first axis that is too small
    with pytest.raises(ValueError, match=r"volume_shape must have 3 sizes .* got \(300, 300\)"):
        net.check_fits((300, 300))
    for axis in range(3):  # the minimum is exact: one voxel less along an axis does not fit the network
        shape = list(minimum)
        shape[axis] -= 1
        with pytest.raises(ValueError, match="does not fit"):
            net.output_shape(shape)


def test_shape_helpers_reject_wrong_lengths_and_axes():
    net = make("3d-valid-thick-slices")
    with pytest.raises(ValueError, match=r"output_shape must have 3 sizes .* got \(10,\)"):
        net.input_shape_for((10,))
    with pytest.raises(ValueError, match=r"output_shape sizes must be >= 1, got \(10, 0, 4\)"):
        net.input_shape_for((10, 0, 4))
    with pytest.raises(ValueError, match=r"axis must be in \[0, 3\), got 3"):
        net.nearest_valid_input_sizes(40, axis=3)


# ------------------------------------------------------------------------------------ defaults unchanged
DEFAULT_KEYS = [
    "encoder.stem.0.0.weight",
    "encoder.stem.0.0.bias",
    "encoder.stem.1.0.weight",
    "encoder.stem.1.0.bias",
    *[f"encoder.downs.{i}.1.{j}.0.{p}" for i in range(2) for j in range(2) for p in ("weight", "bias")],
    *[
        f"decoder.ups.{i}.{part}.{p}"
        for i in range(2)
        for part in ("upsample.0", "conv.0.0", "conv.1.0")
        for p in ("weight", "bias")
    ],
    "head.weight",
    "head.bias",
]


@pytest.mark.parametrize(
    "explicit",
    [
        dict(pool_sizes=[2, 2], kernel_sizes=[3, 3, 3]),
        dict(pool_sizes=[[2, 2], [2, 2]], kernel_sizes=[[3, 3], [3, 3], [3, 3]], mid_features=[4, 8, 16]),
        dict(up_features=[4, 8]),
    ],
    ids=["ints", "per-axis-lists", "up-features"],
)
def test_explicit_defaults_build_the_same_network(explicit):
    """The same state dict (keys, shapes and values for one seed) and outputs as the default configuration, so
    checkpoints of the default network load into it and vice versa."""
    torch.manual_seed(0)
    default = PaperUNet(2, 1, 2, features=(4, 8, 16)).eval()
    torch.manual_seed(0)
    net = PaperUNet(2, 1, 2, features=(4, 8, 16), **explicit).eval()
    state = net.state_dict()
    assert list(state) == list(default.state_dict()) == DEFAULT_KEYS
    assert all(torch.equal(state[k], default.state_dict()[k]) for k in state)
    assert net.isotropic and type(net.context) is int and net.context == default.context == 20
    x = torch.randn(1, 1, *net.input_shape_for((6, 10)))
    with torch.no_grad():
        torch.testing.assert_close(net(x), default(x), atol=0, rtol=0)
    assert default.state_dict()["encoder.stem.0.0.weight"].shape == (4, 1, 3, 3)
    assert default.state_dict()["decoder.ups.0.upsample.0.weight"].shape == (16, 8, 2, 2)


def test_anisotropic_network_keeps_the_state_dict_keys():
    """Only the kernel shapes change: a checkpoint's keys are those of the default network."""
    net = make("2d-valid-pool-1-along-axis-1", features=(4, 8, 16))
    assert list(net.state_dict()) == DEFAULT_KEYS
    assert net.state_dict()["encoder.stem.0.0.weight"].shape == (4, 1, 3, 1)
    assert net.state_dict()["decoder.ups.1.upsample.0.weight"].shape == (8, 4, 2, 1)


# ---------------------------------------------------------------------------------- constructor checks
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(pool_sizes=[2]), r"pool_sizes must list 2 entries .* got \[2\]"),
        (dict(pool_sizes=[[2, 2, 1], 2]), r"pool_sizes entries must each be .* got \[2, 2, 1\] in"),
        (dict(pool_sizes=[0, 2]), r"pool_sizes entries must each be an int >= 1 .* got 0 in \[0, 2\]"),
        (dict(pool_sizes="22"), r"pool_sizes must list 2 entries .* got '22'"),
        (dict(kernel_sizes=[3, 3]), r"kernel_sizes must list 3 entries .* got \[3, 3\]"),
        (dict(kernel_sizes=[3, [3, 2], 3]), r"kernel_sizes must be odd .* got \[3, \[3, 2\], 3\]"),
        (dict(kernel_sizes=[3, [3, 0], 3]), r"kernel_sizes entries must each be .* got \[3, 0\]"),
        (dict(mid_features=[2, 4]), r"mid_features must list 3 positive channel counts .* got \[2, 4\]"),
        (dict(mid_features=[2, 0, 4]), r"mid_features must list 3 positive channel counts .* got \[2, 0, 4\]"),
        (dict(up_features=[4, 8, 16]), r"up_features must list 2 positive channel counts .* got \[4, 8, 16\]"),
    ],
    ids=[
        "pool-count",
        "pool-axes",
        "pool-zero",
        "pool-string",
        "kernel-count",
        "kernel-even",
        "kernel-zero",
        "mid-count",
        "mid-zero",
        "up-count",
    ],
)
def test_constructor_rejects_bad_per_level_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PaperUNet(2, 1, 2, features=(4, 8, 16), **kwargs)


# -------------------------------------------------------------- TorchScript, memory format, precision, grads
@pytest.mark.parametrize("name", ["3d-same-thick-slices", "2d-valid-pool-3", "3d-valid-channel-plan"])
def test_torchscript_matches_eager_and_survives_save_and_load(name, tmp_path):
    net = make(name).eval()
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, str(tmp_path / "net.ts"))
    loaded = torch.jit.load(str(tmp_path / "net.ts"))
    x = torch.randn(2, 1, *net.input_shape_for((5, 6, 3)[: net.spatial_dims]))
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["3d-valid-thick-slices", "3d-same-thick-slices", "3d-valid-channel-plan"])
def test_channels_last_and_bf16_autocast(name):
    net = make(name, norm="batch").eval()
    x = torch.randn(2, 1, *net.input_shape_for((6, 5, 4)))
    fmt = torch.channels_last_3d
    net_cl = copy.deepcopy(net).to(memory_format=fmt)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(net_cl(x.contiguous(memory_format=fmt)), expected, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net_cl(x.contiguous(memory_format=fmt))
    assert low.dtype == torch.bfloat16 and low.shape == expected.shape
    assert (low.float() - expected).abs().max() / expected.abs().max() < 0.1


@pytest.mark.parametrize("name", ["3d-valid-thick-slices", "2d-same-kernel-5", "3d-valid-channel-plan"])
def test_every_parameter_gets_a_gradient(name):
    net = make(name).train()
    x = torch.randn(2, 1, *net.input_shape_for((4, 3, 2)[: net.spatial_dims]))
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().max() > 0, param_name


@pytest.mark.parametrize("name", ["2d-valid-pool-3", "3d-same-thick-slices", "3d-valid-channel-plan"])
def test_no_grad_forward_equals_the_autograd_forward(name):
    """Without autograd the decoder fills each concatenation in place (with each level's upsampling factor)."""
    net = make(name).eval()
    net.inference_slabs = 0  # the whole-map no-grad path; slabs are tested in test_slabs.py
    x = torch.randn(2, 1, *net.input_shape_for((5, 6, 3)[: net.spatial_dims]))
    with torch.no_grad():
        lean = net(x)
    torch.testing.assert_close(lean, net(x).detach(), atol=1e-6, rtol=1e-6)


def test_channel_plan_widths():
    net = make("3d-valid-channel-plan")
    convs = [(m.in_channels, m.out_channels) for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert convs == [
        (1, 2), (2, 4),  # level 0: mid_features 2, features 4
        (4, 4), (4, 8),
        (8, 8), (8, 16),  # bottleneck
        (16, 16), (16 + 8, 8), (8, 8),  # up_features 16: the up-convolution keeps the channels
        (8, 8), (8 + 4, 4), (4, 4),
        (4, 2),
    ]  # fmt: skip
