"""Transforms the paper needs and MONAI lacks: elastic deformation on a coarse grid, the border weight map,
watershed lines that separate the cells of a membrane map (evaluation post-processing); for clinical CT and MR,
normalisation by modality per channel (:class:`NormalizeByModalityd`, with :func:`foreground_intensity_stats` for
the data-set statistics) and foreground-aware patch centres (:class:`ForegroundLocationsd` +
``RandElasticGridd(label_key=..., pos_fraction=...)``), and small mirrored fields of view in training
(:class:`RandFieldOfViewd`, for scans cropped around an organ); and checks of loaded data whose errors name the file:
:class:`CheckImaged` (NaN, dimensionality, channels, one grid) and :class:`CheckPaird` (a label of 1 channel on its
image's grid within 1e-4 mm, with allowed values only).

For the rest, use MONAI's own transforms, which already do exactly the job:

- z-score normalisation, over the image or its nonzero voxels, per channel: ``NormalizeIntensityd(keys,
  nonzero=..., channel_wise=True)``;
- percentile clipping and scaling of each image: ``ScaleIntensityRangePercentilesd(keys, lower, upper, b_min,
  b_max, clip=True)``;
- CT windowing by HU range: ``ScaleIntensityRanged(keys, a_min=level - width / 2, a_max=level + width / 2,
  b_min=0.0, b_max=1.0, clip=True)`` (the ``"window"`` scheme of :class:`NormalizeByModalityd`);
- random flips along chosen axes: ``RandFlipd(keys, prob, spatial_axis)``; random 90-degree rotations in
  plane: ``RandRotate90d(keys, prob, max_k, spatial_axes)``;
- the valid-padding crop of labels and weight maps to the network's output: ``CenterSpatialCropd(keys,
  roi_size=network.output_shape(patch_size))``, or ``crop_keys`` of :class:`RandElasticGridd`.
"""

from unet_monai.transforms.check import CheckImage, check_label, check_same_grid, grid_distance_mm, label_value_counts
from unet_monai.transforms.dictionary import (
    BorderWeightMapd,
    CheckImaged,
    CheckPaird,
    ForegroundLocationsd,
    NormalizeByModalityd,
    RandElasticGridd,
)
from unet_monai.transforms.elastic import RandElasticGrid, cubic_upsample_matrix, dense_displacement
from unet_monai.transforms.field_of_view import RandFieldOfViewd
from unet_monai.transforms.ignore import MaskIgnoredd
from unet_monai.transforms.intensity import SCHEMES, NormalizeByModality, ct_scheme, foreground_intensity_stats
from unet_monai.transforms.pad import MirrorPadd
from unet_monai.transforms.sampling import ForegroundLocations, ForegroundSampler, VoxelLocations, voxel_locations
from unet_monai.transforms.watershed import WatershedLines, WatershedLinesd, watershed_lines
from unet_monai.transforms.weight_map import BorderWeightMap, border_weight_map

__all__ = [
    "MaskIgnoredd",
    "MirrorPadd",
    "RandFieldOfViewd",
    "RandElasticGrid",
    "RandElasticGridd",
    "BorderWeightMap",
    "BorderWeightMapd",
    "border_weight_map",
    "cubic_upsample_matrix",
    "dense_displacement",
    "CheckImage",
    "CheckImaged",
    "check_same_grid",
    "check_label",
    "grid_distance_mm",
    "label_value_counts",
    "CheckPaird",
    "NormalizeByModality",
    "NormalizeByModalityd",
    "SCHEMES",
    "foreground_intensity_stats",
    "ct_scheme",
    "ForegroundLocations",
    "ForegroundLocationsd",
    "ForegroundSampler",
    "VoxelLocations",
    "voxel_locations",
    "WatershedLines",
    "WatershedLinesd",
    "watershed_lines",
]
