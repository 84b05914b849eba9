"""fastest_autocast_dtype on this machine's CPU: bf16 where oneDNN has native bf16, float32 elsewhere, said once."""

from __future__ import annotations

import pytest
import torch

from unet_monai.inferers import fastest_autocast_dtype
from unet_monai.inferers.autocast import _say_float32_on_this_cpu


def test_cpu_dtype_follows_native_bf16_and_a_float32_cpu_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """Whichever CPU runs the test: native bf16 (AVX-512 bf16, AMX) gives bfloat16 and no warning; without it,
    float32 and one warning per process that names the CPU's capability and the cost to a 3D net's time budget."""
    _say_float32_on_this_cpu.cache_clear()  # another test in this process may have asked already
    with caplog.at_level("WARNING", logger="unet_monai.inferers.autocast"):
        dtypes = {fastest_autocast_dtype("cpu"), fastest_autocast_dtype(torch.device("cpu"))}
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert dtypes == {"bfloat16" if native else "float32"}
    said = [r.getMessage() for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(said) == (0 if native else 1)
    if said:
        assert torch.backends.cpu.get_cpu_capability() in said[0] and "--time_limit_minutes" in said[0]
