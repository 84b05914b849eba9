"""``Conv3d``: one float32 sample on the CPU runs on oneDNN, with the values and gradients of ``nn.Conv3d``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from unet_monai.networks import PaperUNet
from unet_monai.networks.onednn import Conv3d, uses_reference_kernel

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

REFERENCE, ONEDNN = "aten::slow_conv3d_forward", "aten::mkldnn_convolution"


def kernels(conv: nn.Module, x: torch.Tensor) -> set[str]:
    """The forward kernels PyTorch runs for ``conv(x)``. (The profiler does not name the backward's kernel; PyTorch
    picks it by the same rule from the same input, so a batch of two runs on oneDNN both ways.)"""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        conv(x)
    return {e.key for e in prof.key_averages()} & {REFERENCE, ONEDNN}


# (input shape, in -> out channels, kernel, padding): the levels of the SCT cord plan (16-32-64, 60 x 76 x 76), an
# anisotropic (3, 3, 1) level, a same-padded one, the 1x1x1 head, and inputs PyTorch already runs on oneDNN
CASES = [
    ((1, 16, 28, 36, 36), 32, (3, 3, 3), 0),
    ((1, 1, 60, 76, 76), 16, (3, 3, 3), 0),
    ((1, 32, 14, 22, 22), 32, (3, 3, 3), 0),
    ((1, 16, 21, 38, 38), 16, (3, 3, 3), 0),  # an odd number of output rows
    ((1, 16, 20, 36, 36), 2, (1, 1, 1), 0),
    ((1, 32, 20, 30, 12), 32, (3, 3, 1), 0),
    ((1, 24, 12, 20, 20), 16, (3, 3, 3), 1),
    ((1, 16, 58, 74, 74), 16, (3, 3, 3), 0),  # N * C * D * H > 20480: oneDNN already
    ((2, 16, 28, 36, 36), 32, (3, 3, 3), 0),  # a batch of two: oneDNN already
]


@pytest.mark.parametrize("shape, out_channels, kernel, padding", CASES)
def test_predicate_names_the_kernel_pytorch_runs(shape: tuple, out_channels: int, kernel: tuple, padding: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(shape[1], out_channels, kernel, padding=padding)
    x = torch.randn(shape)
    expected = {REFERENCE} if uses_reference_kernel(x, conv) else {ONEDNN}
    assert kernels(conv, x) == expected


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("shape, out_channels, kernel, padding", CASES[:7])
def test_values_and_gradients_are_nn_conv3d_s_on_onednn(
    shape: tuple, out_channels: int, kernel: tuple, padding: int, layout: torch.memory_format
) -> None:
    torch.manual_seed(0)
    plain = nn.Conv3d(shape[1], out_channels, kernel, padding=padding).to(memory_format=layout)
    ours = Conv3d(shape[1], out_channels, kernel, padding=padding).to(memory_format=layout)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(shape).to(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert uses_reference_kernel(x, plain)

    assert kernels(ours, x) == ({ONEDNN} if max(kernel) > 1 else {REFERENCE})  # a 1x1x1 gains nothing: left as is
    y_plain, y_ours = plain(x1), ours(x2)
    assert y_ours.shape == y_plain.shape
    torch.testing.assert_close(y_ours, y_plain, rtol=1e-4, atol=1e-4)

    grad = torch.randn_like(y_plain)
    y_plain.backward(grad)
    y_ours.backward(grad)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ours.bias.grad, plain.bias.grad, rtol=1e-3, atol=1e-3)


def test_other_inputs_take_nn_conv3d_s_path() -> None:
    """A batch of two, bf16 autocast and a scripted module run ``F.conv3d`` itself: the same kernels as
    ``nn.Conv3d``, the same values to the bit."""
    torch.manual_seed(0)
    plain = nn.Conv3d(16, 32, 3)
    ours = Conv3d(16, 32, 3)
    ours.load_state_dict(plain.state_dict())
    batch = torch.randn(2, 16, 28, 36, 36)
    one = batch[:1]
    scripted = torch.jit.script(ours)
    with torch.no_grad():
        assert torch.equal(ours(batch), plain(batch))
        assert torch.equal(scripted(one), plain(one))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(ours(one), plain(one))
    assert kernels(scripted, one) == {REFERENCE}


def test_3d_unet_of_one_patch_runs_on_onednn() -> None:
    """A 3D ``PaperUNet`` trained one patch at a time: every convolution but the 1x1x1 head runs on oneDNN (without
    :class:`Conv3d` the deeper levels take the reference kernel)."""
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(8, 16, 32), norm="batch").to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 1, 60, 60, 60).to(memory_format=torch.channels_last_3d)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    calls = {e.key: e.count for e in prof.key_averages() if e.key in (REFERENCE, ONEDNN)}
    assert calls == {REFERENCE: 1, ONEDNN: 10}  # 5 levels of two 3^3 convolutions; the head
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
