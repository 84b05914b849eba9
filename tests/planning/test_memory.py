"""The training-memory estimate: its feature-map sizes are the network's, and it is near a measured peak."""

from __future__ import annotations

import pytest
import torch

from unet_monai.inferers import fastest_autocast_dtype
from unet_monai.networks import PaperUNet
from unet_monai.networks.blocks import ConvNormAct
from unet_monai.planning import estimate_training_memory_mb, feature_map_sizes, measure_training_peak_mb

POOLS = [[2, 2, 1], [2, 2, 2]]
KERNELS = [[3, 3, 1], [3, 3, 3], [3, 3, 3]]


def test_feature_map_sizes_are_those_of_the_network() -> None:
    torch.set_num_threads(1)
    net = PaperUNet(3, 1, 2, features=(2, 4, 8), pool_sizes=POOLS, kernel_sizes=KERNELS)
    shape = net.input_shape_for((8, 8, 6))
    seen: list[tuple[int, ...]] = []
    for module in net.modules():
        if isinstance(module, ConvNormAct):
            module.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
    with torch.no_grad():
        net.train()(torch.zeros(1, 1, *shape))
    sizes = feature_map_sizes(shape, (2, 4, 8), POOLS, KERNELS)
    decoder_convs = [s for i, s in enumerate(sizes["decoder"]) if i % 3]  # (up, conv 1, conv 2) per step
    assert seen == sizes["encoder"] + decoder_convs
    assert sizes["decoder"][-1] == net.output_shape(shape)


def test_feature_map_sizes_refuse_an_input_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"input_shape \(21, 20, 20\) must fit the network"):
        feature_map_sizes((21, 20, 20), (2, 4), [[2, 2, 2]], None)


def test_estimate_is_near_the_measured_peak_of_a_training_step() -> None:
    """In the precision the bundle trains in on this CPU: bf16 autocast where oneDNN has native bf16, float32
    elsewhere (AVX2 only; there bf16 autocast runs reference kernels, whose buffers the estimate does not model)."""
    torch.set_num_threads(1)
    net = PaperUNet(3, 1, 3, features=(8, 16, 32), norm="batch", pool_sizes=POOLS, kernel_sizes=KERNELS)
    shape = net.input_shape_for((16, 16, 8))
    bf16 = fastest_autocast_dtype("cpu") == "bfloat16"
    measured = measure_training_peak_mb(net, shape, batch_size=2, dtype=torch.bfloat16 if bf16 else torch.float32)
    estimate = estimate_training_memory_mb(
        shape, 1, 3, (8, 16, 32), POOLS, KERNELS, norm="batch", batch_size=2, activation_bytes=2 if bf16 else 4
    )
    assert 0.9 * measured <= estimate <= 1.5 * measured, (estimate, measured)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_estimate_is_near_the_cuda_peak_of_a_planned_size_step() -> None:
    """The budget is GPU memory: on CUDA (bf16 autocast, torch.cuda.max_memory_allocated) at a planner-like size."""
    features, pools = (32, 64, 128, 256), [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    kernels = [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]
    net = PaperUNet(3, 1, 2, features=features, norm="batch", pool_sizes=pools, kernel_sizes=kernels)
    shape = net.input_shape_for((52, 52, 14))
    measured = measure_training_peak_mb(net, shape, batch_size=2, device="cuda")
    estimate = estimate_training_memory_mb(shape, 1, 2, features, pools, kernels, norm="batch", batch_size=2)
    assert 0.8 * measured <= estimate <= 1.6 * measured, (estimate, measured)
