"""Test-time augmentation by the symmetries of the voxel grid: flips (and, in 2D, 90-degree rotations).

Each flipped or rotated copy of the image goes through the wrapped inferer, its prediction is turned back, and
the class probabilities are averaged, as nnU-Net's test-time mirroring does. MONAI's ``TestTimeAugmentation``
draws random transforms and inverts them through the transform stack (for uncertainty estimates); the grid's
symmetries need neither: a flip or a transpose is exact and is its own (or a cheap) inverse.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer

__all__ = ["FlipEnsembleInferer", "grid_symmetries"]

_ACTIVATIONS = ("softmax", "sigmoid")

# One symmetry of the grid: the spatial axes to flip (0 = first spatial axis), then whether to swap the first two
# spatial axes (a transpose; with the flips this gives the 90-degree rotations).
Symmetry = tuple[tuple[int, ...], bool]


def grid_symmetries(spatial_dims: int, rotations: bool, flip_axes: Sequence[int] | None = None) -> list[Symmetry]:
    """The symmetries to average over: every combination of flips of ``flip_axes`` (all ``spatial_dims`` axes by
    default: ``2 ** len(flip_axes)`` copies), times the transpose of the first two axes when ``rotations`` (8 in 2D:
    the dihedral group of the square).

    Raises:
        ValueError: ``spatial_dims`` is not 2 or 3, ``rotations`` in 3D (a transpose of anisotropic voxels would
            change the voxel shape; the flips alone are exact), or ``flip_axes`` names an axis twice or one the
            input lacks.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if rotations and spatial_dims != 2:
        raise ValueError("rotations are offered in 2D only (3D voxels are often anisotropic); use the flips.")
    try:
        axes_to_flip = tuple(range(spatial_dims)) if flip_axes is None else tuple(int(a) for a in flip_axes)
    except (TypeError, ValueError):
        raise ValueError(
            f"flip_axes must be a list of spatial axes, e.g. [0, 1], or None, got {flip_axes!r}."
        ) from None
    if len(set(axes_to_flip)) != len(axes_to_flip) or not all(0 <= a < spatial_dims for a in axes_to_flip):
        raise ValueError(
            f"flip_axes must be distinct spatial axes in 0..{spatial_dims - 1} of a {spatial_dims}D input, "
            f"got {list(axes_to_flip)}."
        )
    flips = [axes for n in range(len(axes_to_flip) + 1) for axes in itertools.combinations(axes_to_flip, n)]
    return [(axes, transpose) for transpose in ((False, True) if rotations else (False,)) for axes in flips]


def _apply(x: torch.Tensor, symmetry: Symmetry) -> torch.Tensor:
    axes, transpose = symmetry
    if axes:
        x = torch.flip(x, [2 + a for a in axes])
    return x.transpose(2, 3) if transpose else x


def _undo(x: torch.Tensor, symmetry: Symmetry) -> torch.Tensor:
    axes, transpose = symmetry
    if transpose:
        x = x.transpose(2, 3)
    return torch.flip(x, [2 + a for a in axes]) if axes else x


class FlipEnsembleInferer(Inferer):
    """Average the predictions of ``inferer`` over flipped (and in 2D rotated) copies of the input.

    Args:
        inferer: the inferer that predicts each copy (an :class:`~unet_monai.inferers.OverlapTileInferer` for a
            valid-padding network; MONAI's ``SimpleInferer`` by default). It must return logits.
        rotations: 2D only: also the transposed copies, which with the flips make the 8 rotations and reflections
            of the square (the default in 2D). In 3D the 8 flips are used.
        flip_axes: the spatial axes to flip (0 = first), every combination of them; None (default): all axes. nnU-Net
            mirrors only the axes its training mirrored: ``[0, 1]`` for ``train.json``'s flips.
        activation: ``"softmax"`` (multi-class logits, the default) or ``"sigmoid"`` (one channel per label).

    Returns logits again, so it drops in wherever logits are expected: ``log`` of the mean softmax probability
    (its softmax is the mean probability), or the logit of the mean sigmoid probability. The mean is accumulated
    in float32 over the whole input, ``(B, C, *S)``: for volumes larger than RAM use the plain tiled inference.
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        rotations: bool | None = None,
        activation: str = "softmax",
        flip_axes: Sequence[int] | None = None,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.rotations = rotations
        self.activation = activation
        self.flip_axes = flip_axes

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """``inputs`` ``(B, C, H, W[, D])`` -> logits ``(B, out_channels, H, W[, D])`` (what ``inferer`` returns for one
        copy), averaged over the symmetries in probability."""
        spatial_dims = inputs.dim() - 2
        rotations = spatial_dims == 2 if self.rotations is None else self.rotations
        symmetries = grid_symmetries(spatial_dims, rotations, self.flip_axes)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        total: torch.Tensor | None = None
        for symmetry in symmetries:
            out = self.inferer(_apply(plain, symmetry), network, *args, **kwargs)
            out = torch.as_tensor(out).float()
            probability = torch.softmax(out, 1) if self.activation == "softmax" else torch.sigmoid(out)
            probability = _undo(probability, symmetry)
            total = probability if total is None else total.add_(probability)
        assert total is not None  # at least the identity
        mean = total.div_(len(symmetries)).clamp_(min=torch.finfo(torch.float32).tiny)
        logits = mean.log_() if self.activation == "softmax" else torch.logit(mean, eps=1e-7)
        if isinstance(inputs, MetaTensor):
            return MetaTensor(logits, meta=inputs.meta, applied_operations=inputs.applied_operations)
        return logits
