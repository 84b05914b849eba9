"""Mixed precision and memory format for any inferer, on the CPU as on the GPU.

MONAI's trainers and evaluators only autocast on CUDA (``torch.autocast("cuda")`` with a GradScaler), so
bf16 on a CPU, which runs convolutions about twice as fast where the CPU has AVX-512 bf16, needs this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["AutocastInferer"]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class AutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast`` on the input's device, with channels-last input.

    The network's output comes back as float32, so losses, metrics and blending stay in full precision;
    gradients flow through as usual (the trainer's ``inferer``).

    Args:
        inferer: the inferer to wrap; MONAI's ``SimpleInferer`` by default (one forward pass).
        dtype: ``"bfloat16"`` (default), ``"float16"`` or ``"float32"`` (no autocast).
        channels_last: hand the network channels-last (2D) or channels-last-3d (3D) input; convert the
            network's weights the same way (``net.to(memory_format=...)``) for the full benefit.
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
        if self.channels_last and inputs.dim() in (4, 5):
            fmt = torch.channels_last if inputs.dim() == 4 else torch.channels_last_3d
            inputs = inputs.contiguous(memory_format=fmt)
        enabled = self.dtype != torch.float32
        with torch.autocast(inputs.device.type, dtype=self.dtype, enabled=enabled):
            out = self.inferer(inputs, network, *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out
