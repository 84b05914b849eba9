"""PaperUNet: the published presets, shape arithmetic against real forward passes, gradients, TorchScript,
memory formats, mixed precision, argument validation, initialisation and dropout."""

from __future__ import annotations

import copy
import itertools
import math
import re

import pytest
import torch
from torch import nn

from unet_monai.networks import ConvNormAct, MaxPool, PaperUNet
from unet_monai.networks.blocks import center_crop_to
from unet_monai.networks.presets import blog_unet_2d, cicek_unet_3d, paper_unet_2d


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def small_net(spatial_dims: int, padding: str, depth: int = 2, **kwargs) -> PaperUNet:
    features = (2, 4, 8, 16, 32)[: depth + 1]
    return PaperUNet(spatial_dims, in_channels=1, out_channels=2, features=features, padding=padding, **kwargs)


def output_size(net: PaperUNet, size: int) -> int | None:
    """Output size along one axis through the public API, or None when ``output_shape`` rejects ``size``."""
    try:
        return net.output_shape((size,) * net.spatial_dims)[0]
    except ValueError:
        return None


def an_input_shape(net: PaperUNet) -> tuple[int, ...]:
    """A small valid, non-cubic spatial input shape for ``net``."""
    return net.input_shape_for((6, 10, 3)[: net.spatial_dims])


# --------------------------------------------------------------------------------------------- presets
def test_paper_unet_2d_parameters_and_shape_arithmetic():
    net = paper_unet_2d()
    assert num_params(net) == 31_030_658
    assert net.context == 92
    assert net.output_shape((572, 572)) == (388, 388)
    assert net.input_shape_for((388, 388)) == (572, 572)


def test_paper_unet_2d_forward_572():
    net = paper_unet_2d().eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert torch.isfinite(out).all()


def test_cicek_unet_3d_shape_arithmetic():
    net = cicek_unet_3d()
    assert net.output_shape((132, 132, 116)) == (44, 44, 28)
    assert net.depth == 3
    assert net.context == 44
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())


def test_cicek_unet_3d_narrow_forward():
    net = cicek_unet_3d(features=(2, 4, 8, 16)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 132, 132, 116))
    assert out.shape == (1, 3, 44, 44, 28)
    assert torch.isfinite(out).all()


def _conv_channels(net: PaperUNet) -> list[tuple[str, int, int]]:
    """(module name, in channels, out channels) of every convolution and up-convolution, in module order."""
    convs = (nn.Conv3d, nn.ConvTranspose3d)
    return [(name, m.in_channels, m.out_channels) for name, m in net.named_modules() if isinstance(m, convs)]


def test_cicek_unet_3d_paper_parameter_count():
    """The paper's 19,069,955 is this net with its 3 input channels and 3 labels, counting neither BatchNorm's
    affine parameters nor the up-convolutions' biases (redundant with valid padding: the next convolution's bias
    absorbs them)."""
    net = cicek_unet_3d(in_channels=3, out_channels=3)
    batch_norm = sum(p.numel() for m in net.modules() if isinstance(m, nn.BatchNorm3d) for p in m.parameters())
    up_bias = sum(m.bias.numel() for m in net.modules() if isinstance(m, nn.ConvTranspose3d))
    assert (batch_norm, up_bias) == (2 * (32 + 64 + 64 + 128 + 128 + 256 + 256 + 512 + 2 * (256 + 128 + 64)), 896)
    assert num_params(net) - batch_norm - up_bias == 19_069_955
    assert num_params(net) == 19_075_523
    # the count the issue notes: the same plan, 1 input and 2 outputs, without BatchNorm
    assert num_params(cicek_unet_3d(in_channels=1, out_channels=2, norm=None)) == 19_069_058


def test_cicek_unet_3d_paper_channel_plan():
    net = cicek_unet_3d(in_channels=3, out_channels=3)
    assert [c[1:] for c in _conv_channels(net)] == [
        (3, 32), (32, 64),  # analysis path: the first convolution of a level has half the channels
        (64, 64), (64, 128),
        (128, 128), (128, 256),
        (256, 256), (256, 512),  # bottleneck
        (512, 512), (768, 256), (256, 256),  # synthesis: up-convolution keeps 512, concat with the 256 skip
        (256, 256), (384, 128), (128, 128),
        (128, 128), (192, 64), (64, 64),
        (64, 3),  # 1x1x1 output
    ]  # fmt: skip
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert all(m.kernel_size == (2, 2, 2) and m.stride == (2, 2, 2) for m in ups)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 14  # before each ReLU
    assert net.output_shape((132, 132, 116)) == (44, 44, 28)


def test_cicek_unet_3d_2d_channel_plan_is_the_former_layout():
    torch.manual_seed(0)
    former = PaperUNet(3, 1, 3, features=(64, 128, 256, 512), norm="batch")
    torch.manual_seed(0)
    net = cicek_unet_3d(channel_plan="2d")
    assert num_params(net) == num_params(former) == 22_399_555
    state, expected = net.state_dict(), former.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    with pytest.raises(ValueError, match="channel_plan must be 'paper' or '2d', got 'nnunet'"):
        cicek_unet_3d(channel_plan="nnunet")


def test_blog_unet_2d():
    net = blog_unet_2d().eval()
    assert num_params(net) == 487_449
    with torch.no_grad():
        out = net(torch.randn(10, 1, 224, 224))
    assert out.shape == (10, 1, 224, 224)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0  # not a constant output


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_same_padding_keeps_shape(spatial_dims):
    net = small_net(spatial_dims, "same").eval()
    shape = (16, 24, 8)[:spatial_dims]
    assert net.context == 0
    assert net.output_shape(shape) == shape
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 2, *shape)


# ------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "spatial_dims,padding,norm",
    list(itertools.product([2, 3], ["valid", "same"], [None, "batch"])),
    ids=lambda v: str(v),
)
def test_every_parameter_gets_a_gradient(spatial_dims, padding, norm):
    net = PaperUNet(spatial_dims, 1, 2, features=(4, 8, 16), padding=padding, norm=norm).train()
    shape = net.input_shape_for((4,) * spatial_dims) if padding == "valid" else (8,) * spatial_dims
    x = torch.randn(2, 1, *shape)
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


# -------------------------------------------------------------------------------------- invalid inputs
@pytest.mark.parametrize(
    "make,shape,expected",
    [
        (paper_unet_2d, (570, 572), ["556", "572"]),
        (paper_unet_2d, (572, 573), ["572", "588"]),
        (paper_unet_2d, (100, 572), ["188"]),
        (blog_unet_2d, (220, 224), ["208", "224"]),
        (blog_unet_2d, (8, 224), ["16"]),
    ],
    ids=["paper-570", "paper-573", "paper-too-small", "same-220", "same-too-small"],
)
def test_invalid_size_message_suggests_nearest_sizes(make, shape, expected):
    net = make()
    with pytest.raises(ValueError, match="nearest valid sizes") as info:
        net.output_shape(shape)
    message = str(info.value)
    for size in expected:
        assert re.search(rf"\b{size}\b", message), (size, message)


def test_invalid_size_forward_raises_value_error():
    net = small_net(2, "valid")
    bad = an_input_shape(net)[0] + 1
    with pytest.raises(ValueError, match=rf"input size {bad} along axis 0 is not valid: nearest valid sizes"):
        net(torch.zeros(1, 1, bad, an_input_shape(net)[1]))


@pytest.mark.parametrize(
    "spatial_dims,x_shape,pattern",
    [
        (2, (1, 1, 44), r"4D tensor .* got shape \(1, 1, 44\)"),
        (2, (1, 1, 44, 44, 44), r"4D tensor .* got shape \(1, 1, 44, 44, 44\)"),
        (3, (1, 1, 44, 44), r"5D tensor .* got shape \(1, 1, 44, 44\)"),
        (2, (1, 3, 44, 44), r"1 channels, got shape \(1, 3, 44, 44\)"),
    ],
    ids=["2d-given-1d", "2d-given-3d", "3d-given-2d", "wrong-channels"],
)
def test_wrong_dims_or_channels_raise(spatial_dims, x_shape, pattern):
    net = PaperUNet(spatial_dims, 1, 2, features=(2, 4))
    with pytest.raises(ValueError, match=pattern):
        net(torch.zeros(x_shape))


def test_output_shape_wrong_number_of_dims():
    with pytest.raises(ValueError, match=r"3 dimensions, got \(132, 132\)"):
        cicek_unet_3d(features=(2, 4, 8, 16)).output_shape((132, 132))


# ------------------------------------------------------------------------------------------ shape grid
GRID = list(itertools.product([2, 3], ["valid", "same"], [1, 2, 3], ["deconv", "nearest", "linear"]))


@pytest.mark.parametrize(
    "spatial_dims,padding,depth,upsample", GRID, ids=[f"{d}d-{p}-depth{n}-{u}" for d, p, n, u in GRID]
)
def test_shape_arithmetic_matches_forward(spatial_dims, padding, depth, upsample):
    net = PaperUNet(spatial_dims, 1, 2, features=(1, 2, 4, 8)[: depth + 1], padding=padding, upsample=upsample).eval()
    step = 2**depth
    smallest = net.input_shape_for((1,) * spatial_dims)
    # the next valid size along axis 0, once from nearest_valid_input_sizes and once from input_shape_for
    next_size = net.nearest_valid_input_sizes(smallest[0] + 1)[-1]
    wanted = net.output_shape(smallest)[0] + 1
    assert net.input_shape_for((wanted,) * spatial_dims)[0] == next_size == smallest[0] + step

    forwarded = {}
    for shape in (smallest, (next_size, *smallest[1:])):
        with torch.no_grad():
            out = net(torch.randn(1, 1, *shape))
        forwarded[shape[0]] = tuple(out.shape[2:])
        expected = net.output_shape(shape)
        assert forwarded[shape[0]] == expected, shape
        if padding == "valid":
            assert all(i - o == 2 * net.context for i, o in zip(shape, expected)), (shape, expected)
        else:
            assert expected == shape

    # every size output_shape accepts runs (the two above are the only valid ones in this range), every size
    # it rejects raises ValueError from forward, never a torch RuntimeError (axis 0 varies, the rest valid)
    for size in range(1, next_size + 2):
        shape = (size, *smallest[1:])
        try:
            expected = net.output_shape(shape)
        except ValueError:
            with pytest.raises(ValueError, match="does not fit"):
                net(torch.randn(1, 1, *shape))
        else:
            assert forwarded.get(size) == expected, shape


@pytest.mark.parametrize(
    "padding,depth",
    list(itertools.product(["valid", "same"], [1, 2, 3, 4])),
    ids=lambda v: str(v),
)
def test_nearest_and_input_shape_for_are_consistent(padding, depth):
    """Pure arithmetic (no forward): suggested sizes are valid and bracket the asked size; input_shape_for
    is the smallest valid input covering the wanted output."""
    net = small_net(2, padding, depth=depth)
    step = 2**net.depth
    for size in range(1, 300):
        near = net.nearest_valid_input_sizes(size)
        assert all(output_size(net, s) is not None for s in near)
        assert (near == (size,)) == (output_size(net, size) is not None)
        if len(near) == 1 and near[0] != size:
            assert near[0] > size  # only the smallest valid size, above
        elif len(near) == 2:
            assert near[0] < size < near[1] and near[1] - near[0] == step
        wanted = (size % 50) + 1
        best = net.input_shape_for((wanted, wanted))[0]
        assert output_size(net, best) >= wanted
        below = output_size(net, best - step)
        assert below is None or below < wanted


# ----------------------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize(
    "spatial_dims,padding", list(itertools.product([2, 3], ["valid", "same"])), ids=lambda v: str(v)
)
def test_torchscript_matches_eager(spatial_dims, padding):
    net = small_net(spatial_dims, padding, norm="batch").eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, *an_input_shape(net))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- memory format, precision
@pytest.mark.parametrize(
    "spatial_dims,padding", list(itertools.product([2, 3], ["valid", "same"])), ids=lambda v: str(v)
)
def test_channels_last_matches_contiguous(spatial_dims, padding):
    net = small_net(spatial_dims, padding, norm="batch").eval()
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    net_cl = copy.deepcopy(net).to(memory_format=fmt)
    x = torch.randn(2, 1, *an_input_shape(net))
    with torch.no_grad():
        expected = net(x)
        out = net_cl(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "spatial_dims,padding", list(itertools.product([2, 3], ["valid", "same"])), ids=lambda v: str(v)
)
def test_bf16_autocast_on_cpu(spatial_dims, padding):
    net = small_net(spatial_dims, padding).eval()
    x = torch.randn(2, 1, *an_input_shape(net))
    with torch.no_grad():
        expected = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16
    assert out.shape == expected.shape
    rel_error = (out.float() - expected).abs().max() / expected.abs().max()
    assert rel_error < 0.1
    assert torch.corrcoef(torch.stack([out.float().flatten(), expected.flatten()]))[0, 1] > 0.99


# ------------------------------------------------------------------------ inference-time memory paths
def _with_trained_batch_norm(net: PaperUNet) -> PaperUNet:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(3 * torch.randn(2, 1, *an_input_shape(net)) + 1)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize(
    "spatial_dims,padding", list(itertools.product([2, 3], ["valid", "same"])), ids=lambda v: str(v)
)
def test_eval_folds_batch_norm_into_the_convolution(spatial_dims, padding):
    net = _with_trained_batch_norm(small_net(spatial_dims, padding, norm="batch"))
    blocks = [m for m in net.modules() if isinstance(m, ConvNormAct)]
    assert blocks and all(b.foldable for b in blocks)
    unfolded = copy.deepcopy(net)
    for block in unfolded.modules():
        if isinstance(block, ConvNormAct):
            block.foldable = False  # the plain conv -> BatchNorm -> ReLU sequence
    x = torch.randn(2, 1, *an_input_shape(net))
    with torch.no_grad():
        torch.testing.assert_close(net(x), unfolded(x), atol=1e-5, rtol=1e-5)
    assert net.state_dict().keys() == unfolded.state_dict().keys()
    assert any(k.endswith("1.running_var") for k in net.state_dict())  # children stay conv, norm, relu


def test_only_batch_norm_with_running_statistics_is_folded():
    assert not ConvNormAct(2, 1, 4, 3, 0, None).foldable
    assert not ConvNormAct(2, 1, 4, 3, 0, "instance").foldable
    assert not ConvNormAct(2, 1, 4, 3, 0, ("batch", {"track_running_stats": False})).foldable
    assert ConvNormAct(3, 1, 4, 3, 0, "batch").foldable


def test_training_mode_uses_batch_statistics_not_the_folded_path():
    block = ConvNormAct(2, 1, 4, 3, 1, "batch")
    x = torch.randn(4, 1, 8, 8) * 5 + 3
    y = block.train()(x)
    pre = block[0](x)
    expected = torch.relu(
        (pre - pre.mean((0, 2, 3), keepdim=True)) / torch.sqrt(pre.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    )
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_max_pool_keeps_bf16_under_cpu_autocast(spatial_dims):
    x = torch.randn(2, 3, *(8,) * spatial_dims).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = MaxPool(spatial_dims)(x)
    assert pooled.dtype == torch.bfloat16  # CPU autocast would run max_pool3d in float32
    pool = nn.functional.max_pool2d if spatial_dims == 2 else nn.functional.max_pool3d
    torch.testing.assert_close(pooled.float(), pool(x.float(), 2, 2), atol=0, rtol=0)


@pytest.mark.parametrize(
    "spatial_dims,padding,memory_format",
    [(2, "valid", None), (2, "same", torch.channels_last), (3, "valid", torch.channels_last_3d), (3, "same", None)],
    ids=lambda v: str(v),
)
def test_no_grad_forward_equals_the_autograd_forward(spatial_dims, padding, memory_format):
    """Without autograd the decoder fills each concatenation in place instead of torch.cat: the same values."""
    net = small_net(spatial_dims, padding, depth=3).eval()
    x = torch.randn(2, 1, *an_input_shape(net))
    if memory_format is not None:
        net, x = net.to(memory_format=memory_format), x.contiguous(memory_format=memory_format)
    with torch.no_grad():
        lean = net(x)
    torch.testing.assert_close(lean, net(x).detach(), atol=0, rtol=0)
    up = net.decoder.ups[-1]
    skip = torch.randn(2, up.skip_channels, *(16,) * spatial_dims)
    coarse = torch.randn(2, up.upsample[0].in_channels, *(6,) * spatial_dims)
    with torch.no_grad():
        torch.testing.assert_close(up(coarse, skip), up.forward_from_levels(coarse, [skip]), atol=0, rtol=0)
    torch.testing.assert_close(up(coarse, skip).detach(), up.forward_from_levels(coarse, [skip]).detach())


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_skip_gradient_keeps_the_channels_last_layout_and_equals_narrows(spatial_dims):
    """The crop's backward allocates the skip's gradient channels-last like the skip (torch's narrow backward
    would give a channels-first one, and mixing layouts makes the gradient sum and the ReLU backward slow)."""
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    net = small_net(spatial_dims, "valid", depth=2).to(memory_format=fmt)
    up = net.decoder.ups[-1]
    skip = torch.randn(2, up.skip_channels, *(20,) * spatial_dims).contiguous(memory_format=fmt).requires_grad_()
    coarse = torch.randn(2, up.upsample[0].in_channels, *(6,) * spatial_dims).contiguous(memory_format=fmt)
    layouts = []
    feature_map = skip * 1.0  # an intermediate map, as in the network (a leaf's .grad is restrided to the leaf)
    feature_map.register_hook(lambda grad: layouts.append(grad.is_contiguous(memory_format=fmt)))
    up(coarse, feature_map).square().sum().backward()
    assert layouts == [True]
    reference_skip = skip.detach().clone().requires_grad_()
    upsampled = up.upsample(coarse)
    cropped = center_crop_to(reference_skip, upsampled)
    merged = torch.cat([cropped, upsampled], dim=1)
    for layer in up.conv:
        merged = layer(merged)
    merged.square().sum().backward()
    torch.testing.assert_close(skip.grad, reference_skip.grad)
    border = skip.grad.clone()
    _center_crop_view(border, 12).zero_()
    assert border.abs().max() == 0  # no gradient outside the crop


def _center_crop_view(x: torch.Tensor, size: int) -> torch.Tensor:
    for dim in range(2, x.dim()):
        x = x.narrow(dim, (x.shape[dim] - size) // 2, size)
    return x


# ---------------------------------------------------------------------------------- constructor checks
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(spatial_dims=1), "spatial_dims must be 2 or 3, got 1"),
        (dict(spatial_dims=4), "spatial_dims must be 2 or 3, got 4"),
        (dict(padding="full"), "padding must be one of .* got 'full'"),
        (dict(upsample="bicubic"), "upsample must be one of .* got 'bicubic'"),
        (dict(final_act="relu"), "final_act must be one of .* got 'relu'"),
        (dict(dropout=1.0), "dropout must be >= 0 and < 1, got 1.0"),
        (dict(dropout=-0.1), "dropout must be >= 0 and < 1, got -0.1"),
        (dict(features=(8,)), r"features must list at least two .* got \(8,\)"),
        (dict(features=(8, 0)), r"features must list at least two .* got \(8, 0\)"),
        (dict(in_channels=0), "in_channels and out_channels must be >= 1, got 0 and 2"),
        (dict(final_kernel_size=2), "final_kernel_size must be 1 or 3, got 2"),
    ],
    ids=[
        "spatial_dims-1",
        "spatial_dims-4",
        "padding",
        "upsample",
        "final_act",
        "dropout-1",
        "dropout-negative",
        "features-one-level",
        "features-zero",
        "in_channels",
        "final_kernel_size",
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PaperUNet(**{"features": (2, 4), **kwargs})


# ----------------------------------------------------------------------------- initialisation, dropout
def test_he_initialisation():
    net = PaperUNet(2, 1, 2, features=(64, 128))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 30_000]
    assert len(convs) >= 3
    for conv in convs:
        fan_in = conv.weight[0].numel()
        expected = math.sqrt(2.0 / fan_in)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
        assert conv.weight.mean().abs().item() < 0.05 * expected
        assert torch.count_nonzero(conv.bias) == 0
    # the init is not PyTorch's default kaiming_uniform(a=sqrt(5)), whose std is sqrt(1 / (3 fan_in))
    default_std = math.sqrt(1.0 / (3 * convs[0].weight[0].numel()))
    assert convs[0].weight.std().item() > 2 * default_std


def test_dropout_random_in_train_deterministic_in_eval():
    net = small_net(2, "valid", dropout=0.5)
    x = torch.randn(1, 1, *an_input_shape(net))
    with torch.no_grad():
        net.train()
        assert not torch.equal(net(x), net(x))
        net.eval()
        torch.testing.assert_close(net(x), net(x), atol=0, rtol=0)
