"""Training memory of a :class:`unet_monai.networks.PaperUNet` step, estimated from its feature-map sizes: what the
planner fits a patch size into (nnU-Net's ``static_estimate_VRAM_usage``, but counted, not calibrated on one GPU).

One training step (forward under bf16 autocast, loss, backward, Adam step) holds at its peak:

- the tensors autograd saves in the forward pass (each counted once, as autograd shares them): the input's bf16
  copy; per convolution its output (kept by the BatchNorm, when there is one) and the ReLU's output (kept by the
  ReLU and by the next convolution); per max-pooling its int64 indices; per up step the concatenation (kept by its
  first convolution); the logits;
- the batch itself (float32), the parameters (float32), their gradients, Adam's two moments and the bf16 weight
  copies autocast makes;
- the backward pass's transients: the gradient arriving at the largest feature map and the one it produces
  (``workspace_maps`` maps of the largest level's size, measured at about 3 on the CPU, see the tests).

``measure_training_peak_mb`` measures the same step with torch's profiler (allocator events, CPU or CUDA), which the
tests compare with the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["estimate_training_memory_mb", "feature_map_sizes", "measure_training_peak_mb"]

_MB = 2.0**20


def _entries(value: Sequence[int | Sequence[int]] | None, count: int, dims: int, default: int) -> list[list[int]]:
    if value is None:
        return [[default] * dims for _ in range(count)]
    if len(value) != count:
        raise ValueError(f"pool_sizes / kernel_sizes must list {count} entries, got {list(value)!r}.")
    return [[int(v)] * dims if isinstance(v, int) else [int(s) for s in v] for v in value]


def feature_map_sizes(
    input_shape: Sequence[int],
    features: Sequence[int],
    pool_sizes: Sequence[int | Sequence[int]] | None = None,
    kernel_sizes: Sequence[int | Sequence[int]] | None = None,
    padding: str = "valid",
) -> dict[str, list[tuple[int, ...]]]:
    """Spatial sizes (voxels) of a PaperUNet's feature maps for a spatial input ``input_shape`` ``(H, W[, D])``.

    Returns:
        ``{"encoder": [(after conv 1, after conv 2) per level, finest first], "pooled": [...], "decoder": [(up
        size, after conv 1, after conv 2) per up step, coarsest first]}``, each size a tuple per axis (the
        encoder and decoder lists hold pairs / triples of tuples flattened in that order).

    Raises:
        ValueError: the input does not fit (a size that does not divide by a pool size or runs out).
    """
    dims = len(input_shape)
    levels = len(features)
    pools = _entries(pool_sizes, levels - 1, dims, 2)
    kernels = _entries(kernel_sizes, levels, dims, 3)
    trim = [[0 if padding == "same" else k - 1 for k in entry] for entry in kernels]
    size = [int(s) for s in input_shape]
    encoder: list[tuple[int, ...]] = []
    pooled: list[tuple[int, ...]] = []
    for level in range(levels):
        if level:
            if any(s % p or s < p for s, p in zip(size, pools[level - 1])):
                raise ValueError(
                    f"input_shape {tuple(input_shape)} must fit the network: size {size} at level {level} does not "
                    f"divide by the pool sizes {pools[level - 1]}."
                )
            size = [s // p for s, p in zip(size, pools[level - 1])]
            pooled.append(tuple(size))
        first = [s - t for s, t in zip(size, trim[level])]
        size = [s - t for s, t in zip(first, trim[level])]
        if min(size) < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} must fit the network: it runs out at level {level}.")
        encoder += [tuple(first), tuple(size)]
    decoder: list[tuple[int, ...]] = []
    for level in reversed(range(levels - 1)):
        up = [s * p for s, p in zip(size, pools[level])]
        first = [s - t for s, t in zip(up, trim[level])]
        size = [s - t for s, t in zip(first, trim[level])]
        if min(size) < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} must fit the network: the output runs out.")
        decoder += [tuple(up), tuple(first), tuple(size)]
    return {"encoder": encoder, "pooled": pooled, "decoder": decoder}


def _parameters(
    in_channels: int, out_channels: int, features: Sequence[int], kernels: list[list[int]], dims: int, pools: list
) -> int:
    count = 0
    channels = in_channels
    for level, f in enumerate(features):
        k = math.prod(kernels[level])
        count += (channels * k + 1) * f + (f * k + 1) * f
        channels = f
    for level in reversed(range(len(features) - 1)):
        coarse, fine = features[level + 1], features[level]
        count += coarse * fine * math.prod(pools[level]) + fine  # up-convolution to features[level]
        k = math.prod(kernels[level])
        count += (2 * fine * k + 1) * fine + (fine * k + 1) * fine
    count += features[0] * out_channels + out_channels
    return count


def estimate_training_memory_mb(
    input_shape: Sequence[int],
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    pool_sizes: Sequence[int | Sequence[int]] | None = None,
    kernel_sizes: Sequence[int | Sequence[int]] | None = None,
    norm: str | None = "batch",
    batch_size: int = 2,
    activation_bytes: int = 2,
    padding: str = "valid",
    workspace_maps: float = 4.0,
) -> float:
    """Peak memory (MiB) of one training step of a PaperUNet on a batch of ``(batch_size, in_channels,
    *input_shape)`` with the default up-convolution, ``mid_features``/``up_features`` at their defaults (module
    docstring for what is counted).

    Args:
        input_shape: spatial input patch ``(H, W[, D])`` in voxels (``network.input_shape_for(output_patch)``).
        in_channels: input channels.
        out_channels: output channels (classes).
        features: channels per level, finest first.
        pool_sizes: per pooling, an int or one per axis; None: 2.
        kernel_sizes: per level, an int or one per axis; None: 3.
        norm: None or a norm name (a norm keeps one more map per convolution).
        batch_size: patches per step.
        activation_bytes: bytes per activation (2 for bf16 / fp16 autocast, 4 for float32).
        padding: ``"valid"`` or ``"same"``.
        workspace_maps: backward transients, in maps of the largest level's size.

    Returns:
        The estimate in MiB (2**20 bytes).
    """
    dims = len(input_shape)
    levels = len(features)
    sizes = feature_map_sizes(input_shape, features, pool_sizes, kernel_sizes, padding)
    pools = _entries(pool_sizes, levels - 1, dims, 2)
    kernels = _entries(kernel_sizes, levels, dims, 3)
    per_conv = 2 if norm else 1
    voxels = math.prod
    elements = in_channels * voxels(input_shape)  # the input's bf16 copy
    indices = 0
    largest = 0
    for level in range(levels):
        f = features[level]
        for size in sizes["encoder"][2 * level : 2 * level + 2]:
            elements += per_conv * f * voxels(size)
            largest = max(largest, f * voxels(size))
        if level:
            indices += features[level - 1] * voxels(sizes["pooled"][level - 1])
    for step, level in enumerate(reversed(range(levels - 1))):
        up, first, second = sizes["decoder"][3 * step : 3 * step + 3]
        f = features[level]
        elements += 2 * f * voxels(up)  # the concatenation (skip + up-convolution, f channels each)
        elements += per_conv * f * (voxels(first) + voxels(second))
        largest = max(largest, 2 * f * voxels(up))
    output = out_channels * voxels(sizes["decoder"][-1] if sizes["decoder"] else sizes["encoder"][-1])
    activations = batch_size * (
        (elements + workspace_maps * largest) * activation_bytes + indices * 8 + output * (activation_bytes + 3 * 4)
    )
    batch = batch_size * in_channels * voxels(input_shape) * 4
    params = _parameters(in_channels, out_channels, features, kernels, dims, pools)
    weights = params * (4 + 4 + 8 + activation_bytes)  # weights, gradients, Adam moments, autocast copies
    return (activations + batch + weights) / _MB


def measure_training_peak_mb(
    network: torch.nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 2,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> float:
    """Measured peak (MiB) of allocated tensor memory during one forward / backward / Adam step of ``network``
    on a random ``(batch_size, in_channels, *input_shape)`` batch under ``dtype`` autocast (none for float32), from
    the profiler's allocator events (on CUDA, ``torch.cuda.max_memory_allocated``). The network's parameters count;
    nothing else alive before the call does."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler import _memory_profiler as mp

    device = torch.device(device)
    network = network.to(device).train()
    in_channels = int(network.in_channels)  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(network.parameters())

    def step() -> None:
        x = torch.randn(batch_size, in_channels, *input_shape, device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = network(x)
        target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=device)
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        step()  # Adam's state exists from here on, as in training
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / _MB
    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        step()
    live = peak = 0
    for _, action, (key, _version), size in mp.MemoryProfile(prof.profiler.kineto_results).timeline:
        if key.device.type != device.type:
            continue
        if action in (mp.Action.PREEXISTING, mp.Action.CREATE):
            live += size
        elif action == mp.Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak / _MB
