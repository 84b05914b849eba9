"""Memory handling for volumes larger than RAM: releasing the pages of memory-mapped tensors (Linux), reductions in
slabs, and memory-mapped outputs laid out in the input's order."""

from unet_monai.memory.mapped import axes_outermost_first, mapped_npy, release_rows, unnamed_mapped_array
from unet_monai.memory.pages import release_pages
from unet_monai.memory.slabs import slabs, streamed_mean_std

__all__ = [
    "axes_outermost_first",
    "mapped_npy",
    "release_pages",
    "release_rows",
    "slabs",
    "streamed_mean_std",
    "unnamed_mapped_array",
]
