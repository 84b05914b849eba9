"""Mixed precision and memory format for any inferer, on the CPU as on the GPU.

MONAI's trainers and evaluators only autocast on CUDA (``torch.autocast("cuda")`` with a GradScaler), so
bf16 on a CPU, which runs convolutions about twice as fast where the CPU has AVX-512 bf16, needs this.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer

__all__ = ["AutocastInferer", "fastest_autocast_dtype"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

logger = logging.getLogger(__name__)


@functools.cache
def _say_float32_on_this_cpu() -> None:
    """Once per process: why a CPU run is float32, and what that costs a 3D net under a time budget."""
    logger.warning(
        "float32 on this CPU (%s): it has no native bf16 (AVX-512 bf16 or AMX), so a 3D training step takes about "
        "6.5 times as long as on a CPU with it (BENCHMARKS.md); under --time_limit_minutes a 3D net needs about 3-7 "
        "times the budget quoted there for the same result (2D nets lose much less).",
        torch.backends.cpu.get_cpu_capability(),
    )


def fastest_autocast_dtype(device: torch.device | str) -> str:
    """The autocast dtype that runs fastest on ``device`` without giving up range: a name for ``AutocastInferer``.

    ``"bfloat16"`` on a CPU with native bf16 (oneDNN: AVX-512 bf16 or AMX) and on a GPU that supports it,
    ``"float16"`` on older GPUs, ``"float32"`` on CPUs without bf16 units, where emulated bf16 is slower (said
    once per process as a warning: 3D training there is several times slower).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bfloat16"
    if device.type == "cpu":
        _say_float32_on_this_cpu()
    return "float32"


class AutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast`` on the input's device, with channels-last input.

    The network's output comes back as float32, so losses, metrics and blending stay in full precision;
    gradients flow through as usual (the trainer's ``inferer``).

    The network gets plain tensors: a MONAI ``MetaTensor`` input is unwrapped before each call (the output is a
    MetaTensor with the input's metadata again, as from MONAI's ``SimpleInferer``). Every operation on a
    MetaTensor goes through its ``__torch_function__``, and an in-place ReLU on one becomes a copy of the whole
    map with a slow backward (``CopySlices``): the bundle's train step ran 1.5x slower with MetaTensor batches.

    Args:
        inferer: the inferer to wrap; MONAI's ``SimpleInferer`` by default (one forward pass).
        dtype: ``"bfloat16"`` (default), ``"float16"`` or ``"float32"`` (no autocast).
        channels_last: hand the network channels-last (2D) or channels-last-3d (3D) input; convert the
            network's weights the same way (``net.to(memory_format=...)``) for the full benefit. Each input the
            network receives (a whole image, a window or a batch of tiles) is converted as it is passed, never
            the whole volume up front: a tiling inferer on a memory-mapped volume then reads only its tiles.
    """

    def __init__(self, inferer: Inferer | None = None, dtype: str = "bfloat16", channels_last: bool = True) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = _DTYPES[dtype]
        self.channels_last = channels_last

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``inputs`` ``(B, C, H, W[, D])``: whatever ``inferer`` returns, floating tensors as float32."""
        memory_format = torch.preserve_format
        if self.channels_last and inputs.dim() in (4, 5):
            memory_format = torch.channels_last if inputs.dim() == 4 else torch.channels_last_3d
        enabled = self.dtype != torch.float32
        with torch.autocast(inputs.device.type, dtype=self.dtype, enabled=enabled):
            out = self.inferer(inputs, _PlainInput(network, memory_format), *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        if isinstance(inputs, MetaTensor) and isinstance(out, torch.Tensor) and not isinstance(out, MetaTensor):
            out = MetaTensor(out, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return out


class _PlainInput:
    """``network`` called with its input as a plain tensor (not a MetaTensor) in ``memory_format``; ``module``
    exposes the network to inferers that read its shape arithmetic (as for a DDP wrapper)."""

    def __init__(self, network: Callable[..., torch.Tensor], memory_format: torch.memory_format) -> None:
        self.module = network
        self.memory_format = memory_format

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        if self.memory_format is not torch.preserve_format:
            x = x.contiguous(memory_format=self.memory_format)
        return self.module(x, *args, **kwargs)
