"""Linux page release for memory-mapped tensors: a pass over a mapped volume keeps only what it is reading resident.

No library does this: numpy and torch leave every page of a mapping that was read in the process's memory (RSS)
until the mapping is closed, so streaming a volume larger than RAM would fill it.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any

import numpy as np
import torch

__all__ = ["release_pages"]

_MADV_DONTNEED = 4  # Linux <sys/mman.h>
_PAGEMAP_PRESENT, _PAGEMAP_FILE = 1 << 63, 1 << 61  # Documentation/admin-guide/mm/pagemap.rst
_libc: Any = None


def _madvise(address: int, length: int, advice: int) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _libc.madvise(address, length, advice) == 0


def release_pages(data: torch.Tensor) -> int:
    """Take the resident pages of a memory-mapped tensor's voxels out of this process's memory (Linux).

    Once read, the pages of a memory-mapped file stay mapped, so the resident memory (RSS) of a pass over a mapped
    volume grows to the volume's size. This drops them from the process's page tables (``madvise(MADV_DONTNEED)``):
    the data stays in the file and the page cache, and a later read maps it again. Only the whole pages inside the
    bytes of ``data`` that the kernel reports as file pages (``/proc/self/pagemap``) are dropped; private memory
    (the heap, a copy-on-write page that was written) is never touched, so nothing can be lost, and for an
    in-RAM tensor this does nothing.

    Args:
        data: any tensor on the CPU; a view of a mapping releases only the pages that lie wholly inside its span of
            memory (from its first to its last element).

    Returns:
        The number of bytes released (0 off Linux, for in-RAM tensors, or for pages not resident).
    """
    if sys.platform != "linux" or data.device.type != "cpu" or data.numel() == 0:
        return 0
    if any(step < 0 for step in data.stride()):
        return 0
    span = (sum((n - 1) * step for n, step in zip(data.shape, data.stride())) + 1) * data.element_size()
    page = mmap.PAGESIZE
    first, last = -(-data.data_ptr() // page), (data.data_ptr() + span) // page  # whole pages only
    if last <= first:
        return 0
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            pagemap.seek(first * 8)
            raw = pagemap.read((last - first) * 8)
    except OSError:
        return 0
    entries = np.frombuffer(raw[: len(raw) // 8 * 8], dtype=np.uint64)
    releasable = (entries & np.uint64(_PAGEMAP_PRESENT | _PAGEMAP_FILE)) == np.uint64(_PAGEMAP_PRESENT | _PAGEMAP_FILE)
    # runs of releasable pages: [start, stop) in pages from ``first``
    edges = np.flatnonzero(np.diff(np.concatenate(([0], releasable.view(np.int8), [0]))))
    released = 0
    for start, stop in zip(edges[::2], edges[1::2]):
        if _madvise((first + int(start)) * page, (int(stop) - int(start)) * page, _MADV_DONTNEED):
            released += (int(stop) - int(start)) * page
    return released
