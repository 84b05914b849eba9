"""Planning, the nnU-Net idea for this bundle: fingerprint a datalist, plan spacing, pooling, patch size, batch size
and normalisation within a memory budget, and write the plan as a bundle overlay (``bundles/unet/plan.json``)."""

from unet_monai.planning.fingerprint import datalist_name, fingerprint_datalist, ras_spacing_and_shape
from unet_monai.planning.memory import estimate_training_memory_mb, feature_map_sizes, measure_training_peak_mb
from unet_monai.planning.overlay import overlay_config, write_overlay
from unet_monai.planning.planner import normalisation_schemes, plan, pooling_plan, target_spacing, valid_output_at_most

__all__ = [
    "datalist_name",
    "fingerprint_datalist",
    "ras_spacing_and_shape",
    "estimate_training_memory_mb",
    "feature_map_sizes",
    "measure_training_peak_mb",
    "plan",
    "pooling_plan",
    "target_spacing",
    "valid_output_at_most",
    "normalisation_schemes",
    "overlay_config",
    "write_overlay",
]
