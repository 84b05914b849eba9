"""The paper's elastic deformation: Gaussian displacements on a coarse grid, cubic interpolation to a dense field.

Why our own: MONAI's ``Rand2DElastic`` draws *uniform* control-point offsets, and ``Rand3DElastic`` smooths
a dense full-resolution noise field (slow, and not a control-grid model: MONAI #1816, #5808). Here the
control grid is coarse (3x3 in the paper), the displacements Gaussian with ``sigma`` voxels (10 in the
paper), and the dense field is the separable cubic interpolation of the grid, computed only for the
voxels that are sampled: with ``spatial_size`` just the patch the network consumes, so a large volume is
never warped whole.

Rotation and scaling (``rotate_range``, ``scale_range``; nnU-Net's spatial augmentation) join the same
sampling grid, so the patch is interpolated once, as nnU-Net's ``SpatialTransform`` does, instead of once
more by a separate ``RandAffined`` over a larger crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform
from monai.transforms.utils import create_rotate
from monai.utils import TransformBackends

from unet_monai.transforms.sampling import ForegroundSampler, VoxelLocations

__all__ = ["RandElasticGrid", "cubic_upsample_matrix", "dense_displacement", "sample_in_chunks"]

_FIELD_KERNELS = ("cubic", "bspline")
_MODES = ("bilinear", "bicubic", "nearest")


def _cubic_weights(t: torch.Tensor, kernel: str) -> torch.Tensor:
    """Weights of the 4 neighbours ``floor(u) - 1 .. floor(u) + 2`` for fractional offsets ``t`` ``(N,)``."""
    t = t[:, None]
    d = torch.stack([1 + t[:, 0], t[:, 0], 1 - t[:, 0], 2 - t[:, 0]], dim=1).abs()  # distances, (N, 4)
    if kernel == "cubic":  # Keys (a = -0.5): interpolating, as bicubic image resizing
        a = -0.5
        near = (a + 2) * d**3 - (a + 3) * d**2 + 1
        far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    else:  # cubic B-spline: smoother, approximating
        near = (4 - 6 * d**2 + 3 * d**3) / 6
        far = (2 - d) ** 3 / 6
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def cubic_upsample_matrix(num_points: int, size: int, kernel: str = "cubic") -> torch.Tensor:
    """``(size, num_points)`` matrix mapping control-point values to ``size`` voxels along one axis.

    The control points span the axis from the first to the last voxel (corners included, as
    ``align_corners=True``); outside neighbours are clamped to the edge points.
    """
    if num_points < 2 or size < 1:
        raise ValueError(f"num_points must be >= 2 and size >= 1, got {num_points} and {size}.")
    u = (
        torch.linspace(0, num_points - 1, size, dtype=torch.float64)
        if size > 1
        else torch.zeros(1, dtype=torch.float64)
    )
    base = u.floor().clamp(max=num_points - 2)
    weights = _cubic_weights(u - base, kernel)  # (size, 4)
    index = (base[:, None].long() + torch.arange(-1, 3)).clamp(0, num_points - 1)  # (size, 4)
    matrix = torch.zeros(size, num_points, dtype=torch.float64)
    matrix.scatter_add_(1, index, weights)
    return matrix.float()


def dense_displacement(
    coarse: torch.Tensor, size: Sequence[int], kernel: str = "cubic", window: Sequence[tuple[int, int]] | None = None
) -> torch.Tensor:
    """Dense displacement field from control-point displacements ``coarse`` ``(N, *grid)``.

    The grid spans ``size`` voxels; the result covers ``window`` (``(start, length)`` per axis, the whole
    ``size`` by default): ``(N, *lengths)``. Separable: one small matrix product per axis, ``O(voxels * grid)``
    work, no full-resolution smoothing.
    """
    window = window or [(0, n) for n in size]
    field = coarse
    for axis, (n, (start, length)) in enumerate(zip(size, window)):
        matrix = cubic_upsample_matrix(coarse.shape[1 + axis], n, kernel)[start : start + length].to(coarse)
        field = torch.movedim(torch.tensordot(field, matrix, dims=([1 + axis], [1])), -1, 1 + axis)
    return field


def sample_in_chunks(image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    """``F.grid_sample(image, grid, align_corners=True)`` for one image ``(1, C, *S)`` at ``grid`` ``(1, *out, ndim)``,
    using every CPU thread: ``(1, C, *out)``, the same values.

    PyTorch's CPU grid sampler parallelises over the batch only, so one image is sampled on one thread. Here the
    output is split along its first axis into one chunk per thread and sampled as a batch of the same image
    (expanded, not copied); the rows the threads do not divide follow in one more call.
    """

    def sample(img: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(img, where, mode=mode, padding_mode=padding_mode, align_corners=True)

    threads = min(torch.get_num_threads(), grid.shape[1])
    if image.device.type != "cpu" or image.shape[0] != 1 or threads < 2 or grid[0, ..., 0].numel() < 2**15:
        return sample(image, grid)
    rows = grid.shape[1] // threads
    head = grid[:, : rows * threads].reshape(threads, rows, *grid.shape[2:])  # a view of a contiguous grid
    out = sample(image.expand(threads, *image.shape[1:]), head)  # (threads, C, rows, ...)
    out = out.transpose(0, 1).reshape(1, image.shape[1], rows * threads, *out.shape[3:])
    if rows * threads < grid.shape[1]:
        out = torch.cat([out, sample(image, grid[:, rows * threads :])], dim=2)
    return out


class RandElasticGrid(RandomizableTransform):
    """Elastic deformation as in Ronneberger et al. (2015), for ``(C, H, W)`` or ``(C, H, W, D)`` images.

    A ``grid_size`` control grid spans the output; each control point is displaced by a Gaussian vector
    with standard deviation ``sigma`` (voxels, or mm when ``units="mm"``); cubic interpolation gives the
    dense field, and the input is resampled at ``x + u(x)``. With ``spatial_size`` the output is a patch of
    that size at a random place (or ``center``) of the input, and only its field is computed. With
    ``rotate_range`` or ``scale_range`` the patch is also rotated and scaled about its centre ``c``, in the
    same single interpolation: the input is read at ``c + R S (x - c) + u(x)``.

    Args:
        prob: probability of deforming. Not deforming returns the input unchanged (or, with
            ``spatial_size``, the plain crop at the same random place).
        grid_size: control points per axis (>= 2), an int for all axes. The paper: 3.
        sigma: displacement standard deviation per axis, in ``units``. The paper: 10 pixels.
        units: ``"voxel"`` or ``"mm"`` (uses the MetaTensor's pixel spacing).
        spatial_size: output patch size in voxels, or None for the input's size.
        mode: resampling, ``"bilinear"`` (linear in 3D too), ``"bicubic"`` (2D only) or ``"nearest"``.
        padding_mode: ``grid_sample`` padding: ``"reflection"`` (mirror, as the paper), ``"border"``, ``"zeros"``.
        field_kernel: ``"cubic"`` (interpolating, the paper's bicubic) or ``"bspline"`` (smoother).
        center_sampler: draws the patch start from the label's class locations instead of uniformly (a
            :class:`~unet_monai.transforms.ForegroundSampler`: a set fraction of patches centred on foreground);
            ``randomize`` then needs ``locations``. None (default): uniform starts, the draws as without it.
        rotate_range: largest rotation in radians, drawn uniformly in ``[-r, r]``: one value (2D, or the same
            range about each of the three axes in 3D) or one per rotation (3D: about axes 0, 1, 2, as MONAI's
            ``create_rotate``; ``(0, 0, r)`` turns only the ``(H, W)`` plane, for volumes with a coarse third
            axis). In voxel space: resample to near-isotropic spacing first, or rotate only in-plane.
        scale_range: scale factors drawn uniformly in ``[1 - r, 1 + r]``, one value for all axes or one per axis
            (MONAI's ``RandAffine`` convention: a factor above 1 reads a larger region, so anatomy looks smaller).
        isotropic_scale: one factor for every axis (nnU-Net's default) instead of one per axis.
        0 (default) for both ranges: no extra draw, the random stream and the output exactly as without them.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 1.0,
        grid_size: Sequence[int] | int = 3,
        sigma: Sequence[float] | float = 10.0,
        units: str = "voxel",
        spatial_size: Sequence[int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "reflection",
        field_kernel: str = "cubic",
        center_sampler: ForegroundSampler | None = None,
        rotate_range: Sequence[float] | float = 0.0,
        scale_range: Sequence[float] | float = 0.0,
        isotropic_scale: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if units not in ("voxel", "mm"):
            raise ValueError(f"units must be 'voxel' or 'mm', got {units!r}.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        if field_kernel not in _FIELD_KERNELS:
            raise ValueError(f"field_kernel must be one of {_FIELD_KERNELS}, got {field_kernel!r}.")
        if padding_mode not in ("reflection", "border", "zeros"):
            raise ValueError(f"padding_mode must be 'reflection', 'border' or 'zeros', got {padding_mode!r}.")
        if any(g < 2 for g in np.atleast_1d(grid_size)):
            raise ValueError(f"grid_size must be >= 2 control points per axis, got {grid_size}.")
        if any(s < 0 for s in np.atleast_1d(sigma)):
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        if len(np.atleast_1d(rotate_range)) not in (1, 3) or any(r < 0 for r in np.atleast_1d(rotate_range)):
            raise ValueError(f"rotate_range must be one angle >= 0 or three (radians), got {rotate_range}.")
        if any(not 0 <= r < 1 for r in np.atleast_1d(scale_range)):
            raise ValueError(f"scale_range must be in [0, 1) (factors 1 - r .. 1 + r), got {scale_range}.")
        self.rotate_range = np.atleast_1d(np.asarray(rotate_range, dtype=np.float64))
        self.scale_range = np.atleast_1d(np.asarray(scale_range, dtype=np.float64))
        self.isotropic_scale = isotropic_scale
        self._affine: torch.Tensor | None = None
        self.grid_size = grid_size
        self.sigma = sigma
        self.units = units
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.mode = mode
        self.padding_mode = padding_mode
        self.field_kernel = field_kernel
        self.center_sampler = center_sampler
        self._coarse: np.ndarray | None = None
        self._start: tuple[int, ...] = ()

    # ------------------------------------------------------------------ random draw
    def randomize(
        self,
        data: Any = None,
        spatial_shape: Sequence[int] | None = None,
        locations: VoxelLocations | None = None,
        label: torch.Tensor | None = None,
        crop_size: Sequence[int] | None = None,
    ) -> None:
        """Draw whether to deform, the control-point displacements (in voxels of the grid, unscaled) and the
        patch start, for an input of spatial shape ``spatial_shape``.

        With a ``center_sampler``: ``locations`` are the label's class locations (of this spatial shape), ``label``
        ``(1, *spatial)`` and ``crop_size`` (the label crop) serve its ignore check; see :class:`ForegroundSampler`.
        """
        super().randomize(None)
        if spatial_shape is None:
            raise ValueError("spatial_shape must be given to randomize RandElasticGrid.")
        ndim = len(spatial_shape)
        grid = tuple(int(g) for g in np.broadcast_to(self.grid_size, (ndim,)))
        out = self.spatial_size or tuple(spatial_shape)
        if len(out) != ndim:
            raise ValueError(
                f"spatial_size must have {ndim} sizes for an input of shape {tuple(spatial_shape)}, got {out}."
            )
        if self.center_sampler is not None and self.center_sampler.active:
            if locations is None:
                raise ValueError("locations must be given to randomize a RandElasticGrid with a center_sampler.")
            self._start = self.center_sampler(self.R, spatial_shape, out, locations, crop_size, label)
        else:
            self._start = tuple(int(self.R.randint(0, max(s - o, 0) + 1)) for s, o in zip(spatial_shape, out))
        self._coarse = self.R.standard_normal((ndim, *grid)).astype(np.float32) if self._do_transform else None
        self._affine = self._draw_affine(ndim) if self._do_transform else None

    def _draw_affine(self, ndim: int) -> torch.Tensor | None:
        """``R S`` ``(ndim, ndim)`` for the drawn rotation and scale, or None where both ranges are 0 (no draw)."""
        if not (self.rotate_range.any() or self.scale_range.any()):
            return None
        if ndim == 2 and self.rotate_range.size != 1:
            raise ValueError(f"rotate_range must be one angle for a 2D input, got {self.rotate_range.tolist()}.")
        if self.scale_range.size not in (1, ndim):
            raise ValueError(f"scale_range must have 1 or {ndim} values, got {self.scale_range.tolist()}.")
        ranges = np.broadcast_to(self.rotate_range, (1 if ndim == 2 else 3,))
        angles = self.R.uniform(-ranges, ranges)
        scale_ranges = np.broadcast_to(self.scale_range, (ndim,))
        scales = self.R.uniform(-scale_ranges, scale_ranges)
        if self.isotropic_scale:
            scales = np.full(ndim, scales[0])
        rotate = torch.as_tensor(create_rotate(ndim, angles.tolist())[:ndim, :ndim], dtype=torch.float32)
        return rotate @ torch.diag(torch.tensor(1 + scales, dtype=torch.float32))

    # ------------------------------------------------------------------ deterministic application
    def _sigma_voxels(self, img: torch.Tensor, ndim: int) -> np.ndarray:
        sigma = np.broadcast_to(np.asarray(self.sigma, dtype=np.float64), (ndim,))
        if self.units == "mm":
            spacing = np.asarray(img.pixdim[:ndim], dtype=np.float64) if isinstance(img, MetaTensor) else np.ones(ndim)
            sigma = sigma / spacing
        return sigma

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        randomize: bool = True,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``img`` ``(C, *S)`` -> ``(C, *spatial_size)`` (or ``(C, *S)``), same dtype; labels stay labels
        with ``mode="nearest"``.

        ``crop_size``: return only the centre ``crop_size`` of the warped patch, computing only its field:
        the label and weight map of a valid-padding network, whose output is the centre of its input.
        """
        img_t = torch.as_tensor(img)
        if img_t.dim() not in (3, 4):
            raise ValueError(f"img must be (C, H, W) or (C, H, W, D), got shape {tuple(img_t.shape)}.")
        spatial = tuple(img_t.shape[1:])
        if randomize:
            self.randomize(spatial_shape=spatial)
        mode = mode or self.mode
        if mode not in _MODES or (mode == "bicubic" and len(spatial) == 3):
            raise ValueError(f"mode must be one of {_MODES} ('bicubic' only in 2D), got {mode!r} for {len(spatial)}D.")
        out_size = tuple(self.spatial_size or spatial)
        if len(out_size) != len(spatial) or len(self._start) != len(spatial):
            raise ValueError(
                f"img spatial shape {spatial} does not match the last random draw; call with randomize=True."
            )
        if any(o > s for o, s in zip(out_size, spatial)):
            raise ValueError(f"spatial_size {out_size} is larger than the input {spatial}; pad the input first.")
        crop = tuple(int(c) for c in crop_size) if crop_size is not None else out_size
        if len(crop) != len(spatial) or any(c > o for c, o in zip(crop, out_size)):
            raise ValueError(f"crop_size must have {len(spatial)} sizes <= spatial_size {out_size}, got {crop}.")
        window = [(o // 2 - c // 2, c) for o, c in zip(out_size, crop)]  # the centre crop, as CenterSpatialCrop
        if self._coarse is None:  # no deformation: the plain crop at the drawn place
            out = img_t[(slice(None), *[slice(s + w, s + w + c) for s, (w, c) in zip(self._start, window)])]
            return self._with_meta(out, img, window)
        sigma = self._sigma_voxels(img, len(spatial))
        coarse = torch.from_numpy(self._coarse) * torch.tensor(sigma, dtype=torch.float32).view(-1, *[1] * len(spatial))
        return self._with_meta(self._warp(img_t, coarse, spatial, out_size, window, mode), img, window)

    def _warp(
        self,
        img: torch.Tensor,
        coarse: torch.Tensor,
        spatial: tuple[int, ...],
        out_size: Sequence[int],
        window: Sequence[tuple[int, int]],
        mode: str,
    ) -> torch.Tensor:
        """Resample ``img`` at ``c + A (x - c) + u(x)`` over ``window`` of the patch (``A`` the drawn rotation and
        scale, the identity without; ``c`` the patch centre); ``coarse`` ``(ndim, *grid)`` in voxels."""
        ndim = len(spatial)
        field = dense_displacement(coarse, out_size, self.field_kernel, window)  # (ndim, *crop), in voxels
        axes = [torch.arange(c, dtype=torch.float32) + w - (o - 1) / 2 for (w, c), o in zip(window, out_size)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # about the patch centre
        if self._affine is not None:
            coords = torch.tensordot(self._affine, coords, dims=([1], [0]))
        centre = torch.tensor([s + (o - 1) / 2 for s, o in zip(self._start, out_size)], dtype=torch.float32)
        coords = coords + centre.view(-1, *[1] * ndim) + field  # absolute voxel coordinates
        # grid_sample wants (x, y[, z]) = reversed axes, normalised to [-1, 1] with align_corners=True
        norm = [2 * coords[i] / max(spatial[i] - 1, 1) - 1 for i in reversed(range(ndim))]
        grid = torch.stack(norm, dim=-1).unsqueeze(0)  # (1, *out_size, ndim)
        work = img if img.dtype == torch.float32 else img.float()
        out = sample_in_chunks(work.unsqueeze(0), grid.to(work.device), mode, self.padding_mode)[0]
        if not img.is_floating_point():
            out = out.round().to(img.dtype)
        elif out.dtype != img.dtype:
            out = out.to(img.dtype)
        return out

    def _with_meta(self, out: torch.Tensor, img: Any, window: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Keep the input's type and metadata; the affine moves to the output's first voxel."""
        if not isinstance(img, MetaTensor):
            return out.as_subclass(torch.Tensor) if isinstance(out, MetaTensor) else out
        affine = img.affine.clone()
        ndim = len(self._start)
        shift = torch.tensor([s + w for s, (w, _) in zip(self._start, window)], dtype=affine.dtype)
        affine[:-1, -1] = affine[:-1, -1] + affine[:-1, :ndim] @ shift
        result = MetaTensor(out.as_subclass(torch.Tensor), meta=img.meta)
        result.affine = affine
        return result
