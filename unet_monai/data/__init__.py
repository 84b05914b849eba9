"""Data sets that ship with the package (generated, never downloaded), sparse annotations (from dense labels or an
annotator's few slices), and the training samplers that keep every batch full."""

from unet_monai.data.batches import FullBatchDistributedSampler, full_batches
from unet_monai.data.failure_tolerant import FailureTolerantDataset
from unet_monai.data.sparse import (
    annotated_positions,
    slice_affine,
    slice_positions,
    sparsify_label,
    write_slice_datalist,
    write_sparse_datalist,
)
from unet_monai.data.synthetic import make_synthetic_em, synthetic_em_volume

__all__ = [
    "FailureTolerantDataset",
    "FullBatchDistributedSampler",
    "annotated_positions",
    "full_batches",
    "make_synthetic_em",
    "slice_affine",
    "slice_positions",
    "sparsify_label",
    "synthetic_em_volume",
    "write_slice_datalist",
    "write_sparse_datalist",
]
