"""3D convolutions of one float32 sample on the CPU, run on oneDNN instead of PyTorch's reference kernel.

PyTorch picks oneDNN for a float32 CPU convolution only when the batch holds more than one sample, or
``N * C * D * H > 20480`` for an input ``(N, C, D, H, W)`` (its rule, written for 2D inputs, leaves out the last
axis). Otherwise it runs ``slow_conv3d``, an im2col kernel, up to 7 times slower forward and backward than oneDNN
on the same convolution: on a 2-core AVX2 EPYC, 16 -> 32 channels, 3^3 on 28 x 36 x 36 (channels-last-3d), forward
and backward take 208 ms against 53 (``benchmarks/bench_conv3d.py``). The deeper levels of a 3D U-Net trained one
patch at a time (``batch_size 1``) hit that rule, while bf16 autocast (CPUs with AVX-512 bf16) always takes oneDNN.
:class:`Conv3d` splits such an input along its first spatial axis into two overlapping halves and convolves them as
a batch of two: the same voxels reach every output voxel, so the result is the convolution's, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv3d", "uses_reference_kernel", "runs_better_as_batch_of_two", "conv3d_as_batch_of_two"]

_ONEDNN_MIN_SIZE = 20480  # PyTorch's threshold on N * C * D * H above which oneDNN runs a batch of one


def _onednn_rule(shape: Sequence[int], conv: nn.Conv3d) -> bool:
    """PyTorch's choice of oneDNN for a float32 CPU input of ``shape`` ``(N, C, D, H, W)``, oneDNN enabled:
    ``ConvParams::use_mkldnn`` in ``aten/src/ATen/native/Convolution.cpp``."""
    kernel = conv.kernel_size
    strided, dilated = any(s != 1 for s in conv.stride), any(d != 1 for d in conv.dilation)
    if not (strided or dilated or shape[0] >= 16 or kernel[-1] != 1 or kernel[-2] != 1 or torch.get_num_threads() > 1):
        return False  # a 1x1 kernel on one thread: PyTorch keeps its own kernel
    large = shape[0] * shape[1] * shape[2] * shape[3] > _ONEDNN_MIN_SIZE
    return conv.groups > 1 or (kernel[-1] > 3 and kernel[-2] > 3) or shape[0] > 1 or large


def uses_reference_kernel(x: torch.Tensor, conv: nn.Conv3d) -> bool:
    """Whether PyTorch runs ``conv`` on the float32 CPU input ``x`` (``(N, C, D, H, W)``, outside autocast) with its
    reference kernel ``slow_conv3d`` rather than oneDNN. Mirrors PyTorch's rule, which
    ``tests/networks/test_onednn.py`` checks against the kernel that actually runs; False for any other input."""
    if x.dim() != 5 or x.dtype != torch.float32 or x.device.type != "cpu" or x.is_mkldnn:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return True
    return not _onednn_rule(x.shape, conv)


def runs_better_as_batch_of_two(x: torch.Tensor, conv: nn.Conv3d) -> bool:
    """Whether :class:`Conv3d` convolves ``x`` as two halves: one sample that PyTorch would run on its reference
    kernel while a batch of two runs on oneDNN, a stride-1 undilated convolution with at least two output rows and a
    kernel larger than 1x1x1 (on the 1x1x1 head the split measured 0.75 times the speed)."""
    if x.dim() != 5 or x.shape[0] != 1 or max(conv.kernel_size) == 1 or isinstance(conv.padding, str):
        return False
    if any(s != 1 for s in conv.stride) or any(d != 1 for d in conv.dilation):
        return False
    rows_out = x.shape[2] + 2 * conv.padding[0] - conv.kernel_size[0] + 1
    if rows_out < 2 or not uses_reference_kernel(x, conv) or not torch.backends.mkldnn.enabled:
        return False
    return _onednn_rule((2, *x.shape[1:]), conv)


def conv3d_as_batch_of_two(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple
) -> torch.Tensor:
    """A stride-1 3D convolution of one sample ``x`` (``(1, C_in, D, H, W)``, ``padding`` zero voxels per side and
    axis) computed as a batch of two overlapping halves along ``D``: ``(1, C_out, D', H', W')``, the output's rows
    ``[0, h)`` from the first half and ``[D' - h, D')`` from the second (``h = ceil(D' / 2)``; with an odd ``D'`` the
    middle row is computed twice and kept once). Differentiable: its backward runs at batch two as well."""
    if padding[0]:
        x = F.pad(x, (0, 0, 0, 0, padding[0], padding[0]))  # the row padding, made explicit for the split
    rows_in = x.shape[2]
    rows_out = rows_in - weight.shape[2] + 1
    half = (rows_out + 1) // 2
    span = half + weight.shape[2] - 1
    both = torch.cat([x[:, :, :span], x[:, :, rows_in - span :]])
    y = F.conv3d(both, weight, bias, 1, (0, padding[1], padding[2]))
    return torch.cat([y[:1], y[1:, :, 2 * half - rows_out :]], dim=2)


class Conv3d(nn.Conv3d):
    """``torch.nn.Conv3d`` (same arguments, parameters and state dict) that runs one float32 sample on the CPU on
    oneDNN: where PyTorch would take its reference kernel (:func:`runs_better_as_batch_of_two`), the input is
    convolved as two overlapping halves in one batch (:func:`conv3d_as_batch_of_two`). ``(1, C_in, D, H, W) -> (1,
    C_out, D', H', W')`` in voxels, as ``nn.Conv3d``; any other input, a 1x1x1 kernel and a scripted module take
    ``nn.Conv3d``'s path."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv3d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        if not torch.jit.is_scripting():
            if runs_better_as_batch_of_two(input, self):
                return self._as_batch_of_two(input, weight, bias)
        return F.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.jit.unused
    def _as_batch_of_two(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return conv3d_as_batch_of_two(x, weight, bias, tuple(self.padding))
