"""The experiment plan: nnU-Net v2's rules (``ExperimentPlanner``, 3d_fullres) adapted to the valid-padding
:class:`unet_monai.networks.PaperUNet`, from a :func:`unet_monai.planning.fingerprint_datalist` fingerprint.

- Target spacing: the median spacing; for anisotropic data (the coarsest axis' median spacing more than
  ``anisotropy_threshold`` = 3 times that of every other axis and, as nnU-Net also requires, fewer than a third
  as many voxels along it) the coarse axis gets the 10th percentile of its spacings (not finer than the others).
- Pooling and kernels per level (nnU-Net's ``get_pool_and_conv_props``): an axis is pooled while its current
  spacing is less than twice the finest current spacing and its patch size stays at least
  ``2 * min_feature_map_size``; a convolution has size 1 along an axis that is still twice as coarse as the
  finest (3 once it is within 2x; the bottleneck always 3).
- Depth: the coarsest poolings are dropped while the valid net's context (voxels lost per side) reaches
  ``max_context_fraction`` of the smallest case's size along some axis. Training mirrors each case by the context
  (``BorderPadd``, ``mode="reflect"``, which needs context < size: fraction 1 for a data set). A single case (the
  semi-automated mode) gets 0.5: with a larger context every output voxel sees a mirrored seam, and the net can
  learn where it is in the one volume instead of what is there (BENCHMARKS.md, the semi-automated experiment).
- Features ``min(32 * 2**level, 320)`` per level in 3D, capped at 512 in 2D (nnU-Net's plans).
- Output patch (what a training step supervises, voxels per axis): from nnU-Net's initial patch (the shape of
  256**3 voxels with the aspect ratio of the spacing, 2048**2 in 2D), at most ``max_patch_fraction`` of the median
  shape after resampling (1 for a data set, as nnU-Net; 0.5 for one case, so that its patches are crops at varied
  positions rather than the same whole volume at every step);
  while :func:`unet_monai.planning.estimate_training_memory_mb` (batch 2, bf16, the valid net's input patch, which
  adds the context on each side) exceeds ``memory_budget_mb``, the axis largest relative to the median shape
  shrinks by one step of the valid sizes, and the pooling plan is redone for the smaller patch (nnU-Net's loop);
  where a step removed a pooling (and so context), the patch then grows back with the final pooling plan, the axis
  smallest relative to the median shape first, while the estimate fits (not in nnU-Net, whose net has no context).
- Batch size: as many patches as the budget holds beyond 2, at most 5 % of the data set's voxels per batch, at
  least 2 (nnU-Net).
- Normalisation per channel: ``"ct"`` (clip to the foreground's 0.5 / 99.5 percentiles, z-score with the
  foreground's mean and std) for a datalist ``modality`` of ``"CT"``, else ``"mr_nonzero"``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unet_monai.networks import PaperUNet
from unet_monai.planning.memory import estimate_training_memory_mb
from unet_monai.transforms.intensity import ct_scheme

__all__ = ["plan", "target_spacing", "pooling_plan", "valid_output_at_most", "normalisation_schemes"]

logger = logging.getLogger(__name__)


def target_spacing(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    anisotropy_threshold: float = 3.0,
) -> tuple[list[float], str]:
    """nnU-Net v2's ``determine_fullres_target_spacing``: spacing (mm) per axis and the reason in words.

    Args:
        spacings: per case the spacing per axis (mm).
        shapes: per case the shape per axis (voxels), same axes.
        anisotropy_threshold: ratio of the coarsest median spacing to that of each other axis above which data is
            anisotropic.
    """
    spacing_arr = np.asarray(spacings, dtype=np.float64)
    shape_arr = np.asarray(shapes, dtype=np.float64)
    if spacing_arr.ndim != 2 or spacing_arr.shape != shape_arr.shape or len(spacing_arr) == 0:
        raise ValueError(f"spacings and shapes must be (cases, axes) arrays of one shape, got {spacing_arr.shape} and "
                         f"{shape_arr.shape}.")  # fmt: skip
    target = np.percentile(spacing_arr, 50, axis=0)
    size = np.percentile(shape_arr, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > anisotropy_threshold * max(target[others])  # nnU-Net 2.8: max
    aniso_voxels = size[worst] * anisotropy_threshold < min(size[others])
    reason = f"median spacing {np.round(target, 4).tolist()} mm"
    if aniso_spacing and aniso_voxels:
        coarse = float(np.percentile(spacing_arr[:, worst], 10))
        if coarse < max(target[others]):
            coarse = max(max(target[others]), coarse) + 1e-5
        coarsest, fewest = max(target[others]), min(size[others])
        reason += (
            f"; anisotropic (axis {worst}: {target[worst]:.4g} mm > {anisotropy_threshold:g} x {coarsest:.4g} mm, "
            f"{size[worst]:g} voxels < {fewest:g} / {anisotropy_threshold:g}), so axis {worst} takes the 10th "
            f"percentile of its spacings, {coarse:.4g} mm"
        )
        target[worst] = coarse
    return [float(s) for s in target], reason


def pooling_plan(
    spacing: Sequence[float], patch_size: Sequence[int], min_feature_map_size: int = 4
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net v2's ``get_pool_and_conv_props``: pool sizes (one per pooling, finest first) and kernel sizes (one
    per level, bottleneck included) for ``spacing`` (mm) and ``patch_size`` (voxels), as PaperUNet takes them.

    Each pooling halves every axis whose current spacing is less than twice the finest current spacing and whose
    current size is at least ``2 * min_feature_map_size`` (a single such axis only while it is at least
    ``3 * min_feature_map_size``). A level's kernel is 1 along an axis that is still at least twice as coarse as
    the finest, else 3; once 3 it stays 3; the bottleneck's kernel is 3 along every axis.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    size = [float(s) for s in patch_size]
    pools: list[list[int]] = []
    kernels: list[list[int]] = []
    kernel = [1] * dims
    while True:
        valid = [i for i in range(dims) if size[i] >= 2 * min_feature_map_size]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2]
        if len(valid) == 1 and size[valid[0]] < 3 * min_feature_map_size:
            break
        if not valid:
            break
        for d in range(dims):
            if kernel[d] != 3 and current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        pool = [1] * dims
        for v in valid:
            pool[v] = 2
            current_spacing[v] *= 2
            size[v] = math.ceil(size[v] / 2)
        pools.append(pool)
        kernels.append(list(kernel))
    kernels.append([3] * dims)
    return pools, kernels


def _shape_net(dims: int, pools: list[list[int]], kernels: list[list[int]]) -> PaperUNet:
    """A PaperUNet with one channel per level: only its shape arithmetic is used (which ignores the channels)."""
    return PaperUNet(dims, 1, 1, features=[1] * len(kernels), pool_sizes=pools, kernel_sizes=kernels)


def valid_output_at_most(network: PaperUNet, wanted: Sequence[int]) -> tuple[int, ...]:
    """The largest output patch (voxels per axis) that ``network`` produces from a valid input and that is at most
    ``wanted`` along every axis; where even the smallest output is larger, that smallest output."""
    smallest = network.min_input_shape
    first = network.output_shape(smallest)  # valid outputs along an axis: first + n * pool_grid (input - 2 context)
    out = []
    for axis, size in enumerate(wanted):
        step = network.pool_grid[axis]
        best = first[axis] + max(0, (int(size) - first[axis]) // step) * step
        out.append(int(best))
    return tuple(out)


def normalisation_schemes(modality: Mapping[str, str], stats: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    """One :class:`unet_monai.transforms.NormalizeByModality` scheme per channel: ``"ct"`` from the foreground
    statistics where the datalist's ``modality`` names the channel ``"CT"``, else ``"mr_nonzero"``."""
    schemes = []
    for channel, channel_stats in enumerate(stats):
        name = str(modality.get(str(channel), "")).strip().upper()
        schemes.append(ct_scheme(channel_stats) if name == "CT" else {"scheme": "mr_nonzero"})
    return schemes


def _fraction(name: str, value: float | None, cases: int) -> float:
    """A planner fraction in (0, 1]: ``value``, or by default 0.5 for a data set of one case, else 1."""
    fraction = (0.5 if cases == 1 else 1.0) if value is None else float(value)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}.")
    return fraction


def plan(
    fingerprint: Mapping[str, Any],
    memory_budget_mb: float = 8192.0,
    base_features: int = 32,
    max_features: int | None = None,
    norm: str = "batch",
    min_feature_map_size: int = 4,
    anisotropy_threshold: float = 3.0,
    min_batch_size: int = 2,
    max_dataset_fraction: float = 0.05,
    max_context_fraction: float | None = None,
    max_patch_fraction: float | None = None,
) -> dict[str, Any]:
    """Plan a PaperUNet training from a fingerprint (module docstring for the rules).

    Args:
        fingerprint: :func:`unet_monai.planning.fingerprint_datalist`'s result.
        memory_budget_mb: training memory (MiB) one step may take, as estimated for batch 2 in bf16.
        base_features: channels of the first level (nnU-Net: 32).
        max_features: channel cap; None: nnU-Net's, 320 in 3D, 512 in 2D.
        norm: the network's norm (``"batch"``, as Cicek et al.).
        min_feature_map_size: smallest patch size (voxels) along a pooled axis at the coarsest level (nnU-Net: 4).
        anisotropy_threshold: see :func:`target_spacing`.
        min_batch_size: the least batch size (nnU-Net: 2).
        max_dataset_fraction: a batch's output voxels cover at most this fraction of the data set's voxels.
        max_context_fraction: the context (voxels per side) stays below this fraction of the smallest case's size
            along every axis, in (0, 1]; None: 0.5 for a fingerprint of one case, else 1.
        max_patch_fraction: the output patch is at most this fraction of the median shape along every axis, in
            (0, 1]; None: 0.5 for a fingerprint of one case, else 1.

    Returns:
        A JSON-serialisable dict: ``spatial_dims``, ``in_channels``, ``num_classes``, ``class_names`` (value ->
        name, the datalist's labels without the ignore value), ``target_spacing`` (mm, RAS axes),
        ``median_shape`` (voxels after resampling), ``pool_sizes``, ``kernel_sizes``, ``features``, ``norm``,
        ``output_patch_size`` and ``val_output_patch_size`` (voxels), ``input_patch_size`` (voxels, with the
        context), ``context`` (voxels per side), ``batch_size``, ``estimated_memory_mb`` (at ``batch_size``),
        ``memory_budget_mb``, ``schemes`` (one per channel), ``manifest``, ``data_root``, ``reasons`` (the rules'
        outcomes in words) and ``fingerprint`` (its data-set summary).

    Raises:
        ValueError: the budget does not hold even the smallest patch (the message gives that patch's estimate),
            or the labels leave fewer than 2 classes.
    """
    dims = int(fingerprint["spatial_dims"])
    if max_features is None:
        max_features = 320 if dims == 3 else 512
    in_channels = int(fingerprint["in_channels"])
    ignore = fingerprint.get("ignore_label")
    labels = {int(k): str(v) for k, v in fingerprint["labels"].items()}
    class_names = {v: n for v, n in sorted(labels.items()) if v != ignore}
    num_classes = len(class_names)
    reasons: list[str] = []
    cases = len(fingerprint["spacings"])
    context_fraction = _fraction("max_context_fraction", max_context_fraction, cases)
    patch_fraction = _fraction("max_patch_fraction", max_patch_fraction, cases)
    if num_classes < 2:
        raise ValueError(f"the datalist's labels must name at least 2 classes (background included), got {labels}.")
    if sorted(class_names) != list(range(num_classes)):
        reasons.append(
            f"label values {sorted(class_names)} are not 0..{num_classes - 1}: map them in stages::labels "
            "(MapLabelValued) before training"
        )
    spacing, why = target_spacing(fingerprint["spacings"], fingerprint["shapes"], anisotropy_threshold)
    reasons.append("target spacing: " + why)
    resampled = [
        [round(sz * sp / t) for sz, sp, t in zip(shape, case_spacing, spacing)]
        for shape, case_spacing in zip(fingerprint["shapes"], fingerprint["spacings"])
    ]
    median_shape = [int(s) for s in np.median(np.asarray(resampled, dtype=np.float64), axis=0)]
    smallest_shape = [int(s) for s in np.min(np.asarray(resampled), axis=0)]
    dataset_voxels = float(sum(math.prod(s) for s in resampled))
    inverse = 1.0 / np.asarray(spacing)
    volume = 256.0**3 if dims == 3 else 2048.0**2
    initial = [round(v) for v in inverse * (volume / np.prod(inverse)) ** (1.0 / dims)]
    patch_bound = [max(1, int(patch_fraction * m)) for m in median_shape]
    wanted = [max(1, min(a, b)) for a, b in zip(initial, patch_bound)]
    within = "the median shape" if patch_fraction == 1 else f"{patch_fraction:g} x the median shape"
    reasons.append(
        f"initial output patch {wanted}: nnU-Net's {initial} (the spacing's aspect ratio) within {within} "
        f"{median_shape} after resampling"
        + (" (one case: crops at varied positions)" if cases == 1 and patch_fraction < 1 else "")
    )

    def estimate(pools: list[list[int]], kernels: list[list[int]], inp: Sequence[int], batch: int) -> float:
        return estimate_training_memory_mb(
            inp, in_channels, num_classes, features_for(len(kernels)), pools, kernels, norm=norm, batch_size=batch
        )

    def features_for(levels: int) -> list[int]:
        return [min(base_features * 2**i, max_features) for i in range(levels)]

    shrunk = 0
    while True:
        pools, kernels = pooling_plan(spacing, wanted, min_feature_map_size)
        dropped = False
        if not pools:
            raise ValueError(
                f"the output patch {wanted} must allow at least one pooling (>= {2 * min_feature_map_size} voxels "
                f"along some axis at spacing {spacing} mm)."
            )
        net = _shape_net(dims, pools, kernels)
        while len(pools) > 1 and any(c >= context_fraction * m for c, m in zip(net.context_per_axis, smallest_shape)):
            # the training pipeline mirrors each case by the context (BorderPadd, mode "reflect"), which needs
            # context < size along every axis; one case needs more room (module docstring): drop the coarsest
            # pooling (and its level) until it holds
            pools, kernels = pools[:-1], kernels[:-2] + kernels[-1:]
            net = _shape_net(dims, pools, kernels)
            dropped = True
        output = list(valid_output_at_most(net, wanted))
        inp = net.input_shape_for(output)
        memory = estimate(pools, kernels, inp, min_batch_size)
        if memory <= memory_budget_mb:
            break
        ratios = [o / m for o, m in zip(output, median_shape)]
        for axis in np.argsort(ratios)[::-1]:
            smaller = [*output[:axis], output[axis] - net.pool_grid[axis], *output[axis + 1 :]]
            # a step down along this axis must give a smaller valid output and leave at least one pooling
            if (
                smaller[axis] >= 1
                and valid_output_at_most(net, smaller)[axis] < output[axis]
                and pooling_plan(spacing, smaller, min_feature_map_size)[0]
            ):
                break
        else:
            raise ValueError(
                f"memory_budget_mb must hold the smallest output patch {output} (input {list(inp)}, batch "
                f"{min_batch_size}, bf16), estimated at {memory:.0f} MiB, got {memory_budget_mb}."
            )
        wanted = smaller
        shrunk += 1
    if shrunk:
        reasons.append(
            f"output patch shrunk {shrunk} step(s) to {output} (input {list(inp)}): the estimate for batch "
            f"{min_batch_size} fits {memory_budget_mb:g} MiB"
        )
        # a shrink step that removed a pooling also removed context, and may leave much of the budget unused: grow
        # the patch back with this pooling plan, the axis smallest relative to the median shape first
        grown = 0
        while True:
            for axis in np.argsort([o / m for o, m in zip(output, median_shape)]):
                larger = [*output[:axis], output[axis] + net.pool_grid[axis], *output[axis + 1 :]]
                if larger[axis] > patch_bound[axis]:
                    continue
                larger_inp = net.input_shape_for(larger)
                if estimate(pools, kernels, larger_inp, min_batch_size) <= memory_budget_mb:
                    output, inp = larger, larger_inp
                    grown += 1
                    break
            else:
                break
        if grown:
            reasons.append(
                f"then grown {grown} step(s) with that pooling plan to {output} (input {list(inp)}), within the "
                f"budget and {within}"
            )
    if dropped:
        reasons.append(
            f"coarsest pooling(s) dropped so that the context {list(net.context_per_axis)} stays below "
            f"{context_fraction:g} x the smallest case {smallest_shape} along every axis (training mirrors each "
            "case by the context"
            + ("; one case: its net must not see the mirrored seams from every voxel)" if cases == 1 else ")")
        )
    reasons.append(
        f"pooling {pools}, kernels {kernels}: pool an axis while its spacing is < 2x the finest and its patch >= "
        f"{2 * min_feature_map_size} voxels; kernel 1 along an axis still >= 2x coarser"
    )
    ids = [str(c.get("case_id", i)) for i, c in enumerate(fingerprint.get("cases", []))] or [
        str(i) for i in range(len(resampled))
    ]
    small = [case for case, shape in zip(ids, resampled) if any(s < o for s, o in zip(shape, output))]
    if small:
        message = (
            f"{len(small)} case(s) ({', '.join(small[:10])}{' ...' if len(small) > 10 else ''}) are smaller than the "
            f"output patch {output} along some axis after resampling (the patch is bounded by the median shape, as in "
            "nnU-Net): training mirrors them up to the input patch (MirrorPadd min_spatial_size; nnU-Net pads them)"
        )
        reasons.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    one = estimate(pools, kernels, inp, 1)
    per_sample = estimate(pools, kernels, inp, 2) - one
    fixed = one - per_sample
    by_memory = int((memory_budget_mb - fixed) // per_sample)
    by_data = round(max_dataset_fraction * dataset_voxels / math.prod(output))
    batch_size = max(min(by_memory, by_data), min_batch_size)
    reasons.append(
        f"batch size {batch_size}: {by_memory} fit(s) the budget, {by_data} cover(s) {max_dataset_fraction:.0%} of the "
        f"data set's voxels, at least {min_batch_size}"
    )
    schemes = normalisation_schemes(fingerprint.get("modality", {}), fingerprint["foreground_intensity"])
    reasons.append(
        "normalisation: " + ", ".join(f"channel {c} {s['scheme']}" for c, s in enumerate(schemes)) + " (datalist "
        f"modality {dict(fingerprint.get('modality', {}))})"
    )
    full_net = _shape_net(dims, pools, kernels)
    result = {
        "spatial_dims": dims,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "class_names": {str(k): v for k, v in class_names.items()},
        "target_spacing": spacing,
        "median_shape": median_shape,
        "pool_sizes": pools,
        "kernel_sizes": kernels,
        "features": features_for(len(kernels)),
        "norm": norm,
        "output_patch_size": output,
        "val_output_patch_size": output,
        "input_patch_size": list(inp),
        "context": list(full_net.context_per_axis),
        "batch_size": int(batch_size),
        "estimated_memory_mb": round(estimate(pools, kernels, inp, batch_size), 1),
        "memory_budget_mb": float(memory_budget_mb),
        "schemes": schemes,
        "manifest": fingerprint["manifest"],
        "data_root": fingerprint.get("data_root"),
        "reasons": reasons,
        "fingerprint": {
            k: fingerprint[k]
            for k in (
                "name",
                "split",
                "median_spacing",
                "median_shape",
                "foreground_intensity",
                "class_counts",
                "modality",
                "labels",
            )
            if k in fingerprint
        }
        | {
            "cases": cases,
            "orientations": sorted({c["orientation"] for c in fingerprint.get("cases", [])}),
        },
    }
    return result
