"""RandElasticGrid and its field: identity at prob=0, seeding, labels, crops and affines, the cubic field,
displacement statistics and units, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import CenterSpatialCrop

from unet_monai.transforms import RandElasticGrid, cubic_upsample_matrix, dense_displacement

SHAPES = {"2d": (1, 24, 20), "3d": (1, 12, 10, 9)}
KERNELS = ["cubic", "bspline"]


def ramp(spatial: tuple[int, ...], offset: float = 0.0) -> torch.Tensor:
    """``(ndim, *spatial)``: channel ``i`` holds the voxel coordinate along axis ``i`` (plus ``offset``).
    Linear, so bilinear resampling returns the sampled coordinate: output minus voxel index is the displacement."""
    axes = [torch.arange(n, dtype=torch.float32) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")) + offset


def unique_image(spatial: tuple[int, ...]) -> torch.Tensor:
    """``(1, *spatial)`` with a distinct value per voxel, so a crop reveals where it was taken."""
    return torch.arange(int(np.prod(spatial)), dtype=torch.float32).reshape(1, *spatial)


def crop_start(out: torch.Tensor, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Where in a :func:`unique_image` of ``spatial`` the first voxel of ``out`` comes from."""
    flat = int(round(float(out.reshape(-1)[0])))
    return tuple(int(i) for i in np.unravel_index(flat, spatial))


def plain_crop(img: torch.Tensor, start, size) -> torch.Tensor:
    return img[(slice(None), *[slice(s, s + n) for s, n in zip(start, size)])]


def translation(shift) -> torch.Tensor:
    """4x4 homogeneous translation by ``shift`` voxels (2 or 3 axes)."""
    t = torch.eye(4, dtype=torch.float64)
    t[: len(shift), 3] = torch.tensor([float(s) for s in shift], dtype=torch.float64)
    return t


def seeded(seed: int, **kwargs) -> RandElasticGrid:
    t = RandElasticGrid(**kwargs)
    t.set_random_state(seed)
    return t


# ------------------------------------------------------------------------------------------- prob = 0
@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_prob_zero_returns_input_unchanged(case):
    img = torch.randn(SHAPES[case])
    out = seeded(0, prob=0.0)(img)
    assert torch.equal(out, img)


@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_prob_zero_spatial_size_of_input_is_identity(case):
    img = torch.randn(SHAPES[case])
    out = seeded(0, prob=0.0, spatial_size=img.shape[1:])(img)
    assert torch.equal(out, img)


@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_prob_zero_with_spatial_size_is_plain_crop_at_random_place(case):
    spatial = SHAPES[case][1:]
    size = tuple(n - 5 for n in spatial)
    img = unique_image(spatial)
    starts = set()
    for seed in range(8):
        out = seeded(seed, prob=0.0, spatial_size=size)(img)
        start = crop_start(out, spatial)
        assert all(0 <= s <= n - o for s, n, o in zip(start, spatial, size))
        assert torch.equal(out, plain_crop(img, start, size))
        starts.add(start)
    assert len(starts) > 1, "the crop place is drawn at random"


def test_prob_zero_crop_is_at_the_place_a_deformed_patch_would_be():
    """The docstring: not deforming gives 'the plain crop at the same random place'. With sigma = 0 the deformed
    patch is the plain crop at its drawn place, so both must agree for the same seed."""
    spatial, size = (30, 26), (17, 13)
    img = unique_image(spatial)
    for seed in range(4):
        no_warp = seeded(seed, prob=0.0, spatial_size=size)(img)
        zero_warp = seeded(seed, prob=1.0, sigma=0.0, spatial_size=size, mode="nearest")(img)
        assert torch.equal(no_warp, zero_warp)


@pytest.mark.parametrize(
    "case,mode",
    [("2d", "bilinear"), ("2d", "bicubic"), ("2d", "nearest"), ("3d", "bilinear"), ("3d", "nearest")],
    ids=["2d-bilinear", "2d-bicubic", "2d-nearest", "3d-bilinear", "3d-nearest"],
)
def test_zero_sigma_is_identity(case, mode):
    """No displacement samples every voxel at its own centre: checks the voxel/grid_sample coordinate convention."""
    img = torch.randn(SHAPES[case])
    out = seeded(0, sigma=0.0, mode=mode)(img)
    torch.testing.assert_close(out, img, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_same_seed_same_output(case):
    img = torch.randn(SHAPES[case])
    size = tuple(n - 2 for n in SHAPES[case][1:])
    out_a = seeded(7, sigma=3.0, spatial_size=size)(img)
    out_b = seeded(7, sigma=3.0, spatial_size=size)(img)
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_different_seeds_differ(case):
    img = torch.randn(SHAPES[case])
    out_a = seeded(1, sigma=3.0)(img)
    out_b = seeded(2, sigma=3.0)(img)
    assert not torch.allclose(out_a, out_b, atol=1e-3)


def test_consecutive_calls_draw_new_deformations():
    t = seeded(0, sigma=3.0)
    img = torch.randn(SHAPES["2d"])
    assert not torch.allclose(t(img), t(img), atol=1e-3)


def test_randomize_false_reuses_the_last_draw():
    t = seeded(0, sigma=3.0)
    img = torch.randn(SHAPES["2d"])
    first = t(img)
    again = t(img, randomize=False)
    assert torch.equal(first, again)


# ----------------------------------------------------------------------------------------------- dtype
def label_image(dtype: torch.dtype) -> torch.Tensor:
    """A 40 x 40 label with values {0, 3, 7} in large regions (a disc of 3 and a band of 7 on 0)."""
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    label = torch.zeros(40, 40)
    label[((yy - 14) ** 2 + (xx - 14) ** 2) <= 64] = 3
    label[:, 28:36] = 7
    return label.to(dtype)[None]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64], ids=["uint8", "int64"])
def test_label_keeps_dtype_and_values(dtype):
    label = label_image(dtype)
    for seed in range(3):
        out = seeded(seed, sigma=4.0, mode="nearest")(label)
        assert out.dtype == dtype
        assert set(out.unique().tolist()) == {0, 3, 7}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
def test_image_keeps_float_dtype(dtype):
    img = torch.rand(SHAPES["2d"]).to(dtype)
    out = seeded(0, sigma=3.0)(img)
    assert out.dtype == dtype
    assert out.shape == img.shape


def test_metatensor_in_metatensor_out_and_plain_tensor_stays_plain():
    img = torch.randn(SHAPES["2d"])
    assert type(seeded(0)(img)) is torch.Tensor
    assert isinstance(seeded(0)(MetaTensor(img)), MetaTensor)


# --------------------------------------------------------------------------------------- crop and affine
CROPS = {  # input spatial shape, spatial_size, crop_size; (spatial_size - crop_size) even, as valid padding gives
    "2d": ((40, 36), (30, 28), (20, 14)),
    "3d": ((20, 18, 16), (16, 14, 12), (8, 10, 6)),
}


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_output_shapes_with_spatial_size_and_crop_size(case):
    spatial, size, crop = CROPS[case]
    img = torch.randn(2, *spatial)
    t = seeded(0, spatial_size=size, sigma=3.0)
    assert t(img).shape == (2, *size)
    assert t(img, randomize=False, crop_size=crop).shape == (2, *crop)


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_crop_size_equals_centre_crop_of_full_patch(case):
    spatial, size, crop = CROPS[case]
    img = torch.randn(1, *spatial)
    for seed in range(3):
        full = seeded(seed, spatial_size=size, sigma=4.0)(img)
        cropped = seeded(seed, spatial_size=size, sigma=4.0)(img, crop_size=crop)
        torch.testing.assert_close(cropped, CenterSpatialCrop(crop)(full).as_tensor(), atol=1e-4, rtol=0)


def test_crop_size_odd_difference_equals_monai_centre_crop():
    img = torch.randn(1, 40, 40)
    full = seeded(0, spatial_size=(28, 28), sigma=4.0)(img)
    cropped = seeded(0, spatial_size=(28, 28), sigma=4.0)(img, crop_size=(17, 17))
    torch.testing.assert_close(cropped, CenterSpatialCrop((17, 17))(full).as_tensor(), atol=1e-4, rtol=0)


def axis_aligned_affine(ndim: int) -> torch.Tensor:
    affine = torch.eye(4, dtype=torch.float64)
    affine[:ndim, :ndim] = torch.diag(torch.tensor([0.5, 2.0, 3.0][:ndim], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([10.0, -4.0, 7.5], dtype=torch.float64)
    return affine


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_affine_moves_to_first_voxel_of_patch(case):
    spatial, size, _ = CROPS[case]
    affine = axis_aligned_affine(len(spatial))
    img = MetaTensor(unique_image(spatial), affine=affine)
    for seed in range(3):
        out = seeded(seed, prob=0.0, spatial_size=size)(img)
        start = crop_start(out, spatial)
        torch.testing.assert_close(out.affine, affine @ translation(start))


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_affine_moves_to_first_voxel_of_crop(case):
    """sigma = 0: the output is the crop at start + offset, readable from its values; its affine must point there."""
    spatial, size, crop = CROPS[case]
    affine = axis_aligned_affine(len(spatial))
    img = MetaTensor(unique_image(spatial), affine=affine)
    offset = [(s - c) // 2 for s, c in zip(size, crop)]
    for seed in range(3):
        t = seeded(seed, sigma=0.0, mode="nearest", spatial_size=size)
        full_start = crop_start(t(img), spatial)
        out = t(img, randomize=False, crop_size=crop)
        first = crop_start(out, spatial)
        assert first == tuple(s + o for s, o in zip(full_start, offset))
        torch.testing.assert_close(out.affine, affine @ translation(first))


@pytest.mark.parametrize("case", list(CROPS), ids=list(CROPS))
def test_affine_of_deformed_crop_is_patch_affine_translated_by_offset(case):
    spatial, size, crop = CROPS[case]
    affine = axis_aligned_affine(len(spatial))
    img = MetaTensor(torch.randn(1, *spatial), affine=affine)
    t = seeded(3, sigma=4.0, spatial_size=size)
    full = t(img)
    cropped = t(img, randomize=False, crop_size=crop)
    offset = [(s - c) // 2 for s, c in zip(size, crop)]
    torch.testing.assert_close(cropped.affine, full.affine @ translation(offset))


def oblique_affine() -> torch.Tensor:
    q, _ = np.linalg.qr(np.random.RandomState(0).randn(3, 3))
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, :3] = torch.from_numpy(q * np.array([2.0, 1.5, 3.0]))
    affine[:3, 3] = torch.tensor([5.0, -3.0, 7.0], dtype=torch.float64)
    return affine


def test_affine_moves_to_first_voxel_oblique_3d():
    spatial, size = (20, 18, 16), (8, 10, 6)
    affine = oblique_affine()
    img = MetaTensor(unique_image(spatial), affine=affine)
    out = seeded(1, prob=0.0, spatial_size=size)(img)
    torch.testing.assert_close(out.affine, affine @ translation(crop_start(out, spatial)))


def test_affine_moves_to_first_voxel_oblique_2d():
    spatial, size = (20, 20), (8, 8)
    affine = oblique_affine()
    img = MetaTensor(unique_image(spatial), affine=affine)
    out = seeded(1, prob=0.0, spatial_size=size)(img)
    torch.testing.assert_close(out.affine, affine @ translation(crop_start(out, spatial)))


# ------------------------------------------------------------------------------------- the cubic field
@pytest.mark.parametrize("kernel", KERNELS, ids=KERNELS)
@pytest.mark.parametrize("num_points,size", [(2, 7), (3, 9), (3, 64), (5, 41), (4, 1)], ids=str)
def test_upsample_matrix_rows_sum_to_one(kernel, num_points, size):
    matrix = cubic_upsample_matrix(num_points, size, kernel)
    assert matrix.shape == (size, num_points)
    torch.testing.assert_close(matrix.sum(1), torch.ones(size), atol=1e-6, rtol=0)


@pytest.mark.parametrize("num_points,size", [(3, 9), (3, 33), (5, 41), (4, 31)], ids=str)
def test_cubic_kernel_interpolates_control_points(num_points, size):
    """Control point j sits on voxel j * (size - 1) / (num_points - 1): its row is the unit vector e_j."""
    matrix = cubic_upsample_matrix(num_points, size, "cubic")
    step = (size - 1) // (num_points - 1)
    for j in range(num_points):
        torch.testing.assert_close(matrix[j * step], torch.eye(num_points)[j], atol=1e-6, rtol=0)


def test_bspline_kernel_approximates_control_points():
    """The cubic B-spline is documented as approximating: at an inner control point the weights are 1/6, 4/6, 1/6."""
    matrix = cubic_upsample_matrix(5, 41, "bspline")
    torch.testing.assert_close(matrix[20], torch.tensor([0.0, 1 / 6, 4 / 6, 1 / 6, 0.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNELS)
@pytest.mark.parametrize("grid,size", [((3, 3), (33, 17)), ((3, 4, 2), (9, 10, 5))], ids=["2d", "3d"])
def test_constant_coarse_field_gives_constant_dense_field(kernel, grid, size):
    coarse = torch.tensor([1.5, -2.0, 0.25][: len(grid)]).view(-1, *[1] * len(grid)).expand(len(grid), *grid)
    dense = dense_displacement(coarse.contiguous(), size, kernel)
    assert dense.shape == (len(grid), *size)
    expected = coarse[(slice(None), *[slice(0, 1)] * len(grid))].expand_as(dense)
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNELS)
def test_linear_ramp_stays_linear_between_inner_control_points(kernel):
    """Both kernels reproduce linear functions; the edge points are clamped, so only [1, n - 2] is exact."""
    grid, size = (5, 3), (41, 9)  # control points every 10 voxels along axis 0
    coarse = torch.arange(5.0)[:, None].expand(*grid)[None].contiguous() * 3.0 - 1.0  # 3 j - 1 at point j
    dense = dense_displacement(coarse, size, kernel)[0]
    position = torch.arange(41.0) / 10.0
    inner = slice(10, 31)
    expected = (3.0 * position - 1.0)[:, None].expand(*size)
    torch.testing.assert_close(dense[inner], expected[inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNELS)
@pytest.mark.parametrize(
    "grid,size,window",
    [((3, 3), (30, 25), [(4, 20), (7, 11)]), ((3, 2, 4), (12, 9, 10), [(2, 6), (0, 9), (3, 5)])],
    ids=["2d", "3d"],
)
def test_window_is_subblock_of_full_field(kernel, grid, size, window):
    coarse = torch.randn(len(grid), *grid)
    full = dense_displacement(coarse, size, kernel)
    part = dense_displacement(coarse, size, kernel, window)
    expected = full[(slice(None), *[slice(s, s + n) for s, n in window])]
    torch.testing.assert_close(part, expected, atol=1e-6, rtol=0)


def test_upsample_matrix_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_points must be >= 2 and size >= 1, got 1 and 5"):
        cubic_upsample_matrix(1, 5)
    with pytest.raises(ValueError, match="num_points must be >= 2 and size >= 1, got 3 and 0"):
        cubic_upsample_matrix(3, 0)


# ------------------------------------------------------------------------- displacement statistics, units
def test_control_point_displacement_std_is_sigma():
    """Measured through the transform: at the inner control points of a 5 x 5 grid on 33 x 33 (every 8 voxels),
    the cubic field is the drawn Gaussian displacement, std ``sigma``, mean 0."""
    sigma, spatial = 2.0, (33, 33)
    img = ramp(spatial)
    t = seeded(0, grid_size=5, sigma=sigma)
    samples = []
    for _ in range(120):
        displacement = t(img) - img
        samples.append(displacement[:, 8:25:8, 8:25:8].reshape(-1))
    samples = torch.cat(samples)  # 120 draws x 9 points x 2 axes
    assert abs(float(samples.std()) - sigma) < 0.15 * sigma
    assert abs(float(samples.mean())) < 0.15 * sigma


def test_field_between_control_points_is_their_cubic_interpolation():
    """``sample position - voxel`` (the displacement plus the patch start, a constant) on a patch equals the cubic
    interpolation of its values at the control voxels, since the matrix rows sum to one. With border padding a
    sample outside the input reads as the edge coordinate, so reads strictly inside show that none fell out."""
    size, spatial = (33, 25), (100, 90)
    t = seeded(5, grid_size=(5, 4), sigma=1.5, spatial_size=size, padding_mode="border")
    out = t(ramp(spatial))
    assert all(0.01 < float(out[i].min()) and float(out[i].max()) < n - 1.01 for i, n in enumerate(spatial))
    position = out - ramp(size)
    control = position[:, ::8, ::8]  # 5 x 4 control voxels: 0, 8, .., 32 and 0, 8, 16, 24
    torch.testing.assert_close(position, dense_displacement(control, size, "cubic"), atol=1e-3, rtol=0)


def test_sigma_per_axis_moves_only_that_axis():
    img = ramp((33, 31))
    out = seeded(0, sigma=(0.0, 3.0))(img)
    torch.testing.assert_close(out[0], img[0], atol=1e-4, rtol=0)
    assert float((out[1] - img[1]).abs().max()) > 1.0


def metatensor_with_spacing(data: torch.Tensor, spacing) -> MetaTensor:
    affine = torch.eye(4, dtype=torch.float64)
    affine[: len(spacing), : len(spacing)] = torch.diag(torch.tensor(spacing, dtype=torch.float64))
    return MetaTensor(data, affine=affine)


def strictly_inside(sampled: torch.Tensor) -> torch.Tensor:
    """Voxels whose :func:`ramp` reads (border padding) are strictly inside the image: their sample was inside."""
    spatial = sampled.shape[1:]
    return torch.stack([(sampled[i] > 0.01) & (sampled[i] < n - 1.01) for i, n in enumerate(spatial)]).all(0)


def test_units_mm_halves_displacement_at_pixdim_two():
    img = ramp((33, 33))
    kwargs = {"sigma": 2.0, "padding_mode": "border"}
    sampled_voxels = seeded(4, units="voxel", **kwargs)(img)
    sampled_mm = seeded(4, units="mm", **kwargs)(metatensor_with_spacing(img, (2.0, 2.0))).as_tensor()
    inside = strictly_inside(sampled_voxels) & strictly_inside(sampled_mm)
    assert inside.float().mean() > 0.8
    in_voxels, in_mm = sampled_voxels - img, sampled_mm - img
    assert float(in_voxels.abs().max()) > 1.0
    torch.testing.assert_close(in_mm[:, inside], in_voxels[:, inside] / 2, atol=1e-3, rtol=0)


def test_units_mm_divides_sigma_by_anisotropic_spacing():
    img = torch.randn(1, 30, 26)
    in_mm = seeded(2, units="mm", sigma=(4.0, 4.0))(metatensor_with_spacing(img, (1.0, 2.0)))
    in_voxels = seeded(2, units="voxel", sigma=(4.0, 2.0))(img)
    torch.testing.assert_close(in_mm.as_tensor(), in_voxels, atol=1e-5, rtol=0)


def test_units_mm_plain_tensor_is_unit_spacing():
    img = torch.randn(1, 30, 26)
    torch.testing.assert_close(seeded(2, units="mm")(img), seeded(2, units="voxel")(img))


# ---------------------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"units": "cm"}, "units must be 'voxel' or 'mm', got 'cm'"),
        ({"mode": "area"}, r"mode must be one of \('bilinear', 'bicubic', 'nearest'\), got 'area'"),
        ({"field_kernel": "linear"}, r"field_kernel must be one of \('cubic', 'bspline'\), got 'linear'"),
        ({"padding_mode": "wrap"}, "padding_mode must be 'reflection', 'border' or 'zeros', got 'wrap'"),
        ({"grid_size": 1}, "grid_size must be >= 2 control points per axis, got 1"),
        ({"grid_size": (3, 1)}, r"grid_size must be >= 2 control points per axis, got \(3, 1\)"),
        ({"sigma": -1.0}, "sigma must be >= 0, got -1.0"),
        ({"sigma": (2.0, -0.5)}, r"sigma must be >= 0, got \(2.0, -0.5\)"),
    ],
    ids=["units", "mode", "field_kernel", "padding_mode", "grid_size", "grid_size_axis", "sigma", "sigma_axis"],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandElasticGrid(**kwargs)


def test_bicubic_rejected_for_3d():
    img = torch.randn(SHAPES["3d"])
    with pytest.raises(ValueError, match="'bicubic' only in 2D.*got 'bicubic' for 3D"):
        RandElasticGrid(mode="bicubic")(img)
    with pytest.raises(ValueError, match="'bicubic' only in 2D.*got 'bicubic' for 3D"):
        RandElasticGrid()(img, mode="bicubic")


@pytest.mark.parametrize("prob", [0.0, 1.0], ids=["prob0", "prob1"])
def test_spatial_size_larger_than_input_rejected(prob):
    with pytest.raises(ValueError, match=r"spatial_size \(30, 20\) is larger than the input \(24, 20\)"):
        RandElasticGrid(prob=prob, spatial_size=(30, 20))(torch.randn(SHAPES["2d"]))


def test_spatial_size_of_wrong_length_rejected():
    with pytest.raises(ValueError, match=r"spatial_size must have 2 sizes .* got \(8, 8, 8\)"):
        RandElasticGrid(spatial_size=(8, 8, 8))(torch.randn(SHAPES["2d"]))


@pytest.mark.parametrize("crop", [(21, 10), (10, 10, 10)], ids=["larger", "wrong_length"])
def test_crop_size_larger_than_spatial_size_rejected(crop):
    with pytest.raises(ValueError, match=r"crop_size must have 2 sizes <= spatial_size \(20, 16\)"):
        RandElasticGrid(spatial_size=(20, 16))(torch.randn(SHAPES["2d"]), crop_size=crop)


@pytest.mark.parametrize("shape", [(24, 20), (1, 1, 8, 8, 8), (5,)], ids=["2d_no_channel", "5d", "1d"])
def test_wrong_ndim_input_rejected(shape):
    with pytest.raises(ValueError, match=r"img must be \(C, H, W\) or \(C, H, W, D\), got shape"):
        RandElasticGrid()(torch.randn(shape))


def test_randomize_false_with_other_dimensionality_rejected():
    t = seeded(0)
    t(torch.randn(SHAPES["2d"]))
    with pytest.raises(ValueError, match="does not match the last random draw"):
        t(torch.randn(SHAPES["3d"]), randomize=False)


# ------------------------------------------------------------------------------------------- rotation and scale
def sampled_matrix(
    t: RandElasticGrid, spatial: tuple[int, ...], crop: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Deform a :func:`ramp` (sigma 0: rotation and scale alone) and read back where each output voxel was sampled:
    returns the linear map ``A`` ``(ndim, ndim)`` fitted to the sampled coordinates and the largest residual."""
    out = t(ramp(spatial), crop_size=crop).numpy().reshape(len(spatial), -1)  # (ndim, voxels): sampled coordinates
    grid = ramp(crop).numpy().reshape(len(spatial), -1)
    design = np.concatenate([grid, np.ones((1, grid.shape[1]))])  # affine fit: A x + b
    fit, *_ = np.linalg.lstsq(design.T, out.T, rcond=None)
    residual = np.abs(design.T @ fit - out.T).max()
    return fit[:-1].T, residual


@pytest.mark.parametrize("seed", range(4))
def test_rotation_is_a_rotation_about_the_patch_centre_within_its_range(seed):
    t = seeded(seed, sigma=0.0, rotate_range=0.4, spatial_size=(16, 16))
    matrix, residual = sampled_matrix(t, (64, 64), (4, 4))
    assert residual < 1e-3  # bilinear resampling of a linear image is exact: the map is affine
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(2), atol=1e-4)
    assert np.linalg.det(matrix) > 0
    angle = np.arctan2(matrix[1, 0], matrix[0, 0])
    assert 1e-3 < abs(angle) <= 0.4 + 1e-4


@pytest.mark.parametrize("isotropic", [False, True], ids=["per_axis", "isotropic"])
def test_scale_factors_lie_in_range_and_isotropic_shares_one(isotropic):
    factors = []
    for seed in range(6):
        t = seeded(seed, sigma=0.0, scale_range=0.3, isotropic_scale=isotropic, spatial_size=(12, 12, 12))
        matrix, residual = sampled_matrix(t, (48, 48, 48), (4, 4, 4))
        assert residual < 1e-3
        np.testing.assert_allclose(matrix, np.diag(np.diag(matrix)), atol=1e-5)  # no rotation
        diagonal = np.diag(matrix)
        assert np.all((diagonal >= 0.7 - 1e-5) & (diagonal <= 1.3 + 1e-5)), diagonal
        factors.append(diagonal)
    spread = np.ptp(np.stack(factors), axis=1)  # per draw: how far the axes' factors differ
    assert (spread.max() < 1e-5) if isotropic else (spread.min() > 1e-3)


def test_in_plane_rotation_of_a_volume_leaves_the_third_axis_alone():
    t = seeded(3, sigma=0.0, rotate_range=(0.0, 0.0, 0.5), spatial_size=(12, 12, 8))
    matrix, _ = sampled_matrix(t, (40, 40, 16), (4, 4, 4))
    np.testing.assert_allclose(matrix[2], [0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(matrix[:, 2], [0, 0, 1], atol=1e-5)
    assert abs(np.arctan2(matrix[1, 0], matrix[0, 0])) > 1e-3


def test_patch_centre_is_a_fixed_point_of_rotation_and_scale():
    """The centre voxel of an odd patch samples the same input voxel with and without rotation and scale."""
    plain = seeded(5, sigma=0.0, spatial_size=(9, 9))(ramp((40, 40)), crop_size=(1, 1))
    turned = seeded(5, sigma=0.0, spatial_size=(9, 9), rotate_range=0.5, scale_range=0.2)(
        ramp((40, 40)), crop_size=(1, 1)
    )
    torch.testing.assert_close(turned, plain, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", list(SHAPES), ids=list(SHAPES))
def test_zero_ranges_draw_nothing_more_and_change_nothing(case):
    """The defaults (0) keep the random stream and the output of the transform without rotation and scale."""
    img = torch.randn(SHAPES[case])
    default, explicit = seeded(2), seeded(2, rotate_range=0.0, scale_range=0.0)
    for _ in range(3):
        assert torch.equal(default(img), explicit(img))
    assert default.R.random() == explicit.R.random()
    assert not torch.equal(seeded(2, rotate_range=0.3)(img), seeded(2)(img))


def test_rotated_label_keeps_its_values():
    label = (torch.rand(1, 30, 30, 12) * 3).floor().to(torch.uint8)
    out = seeded(0, rotate_range=0.5, scale_range=0.2, spatial_size=(16, 16, 8))(label, mode="nearest")
    assert out.dtype == torch.uint8 and set(out.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"rotate_range": -0.1}, None, r"rotate_range must be one angle >= 0 or three \(radians\), got -0.1"),
        ({"rotate_range": (0.1, 0.2)}, None, r"rotate_range must be one angle >= 0 or three"),
        ({"scale_range": 1.0}, None, r"scale_range must be in \[0, 1\) \(factors 1 - r .. 1 \+ r\), got 1.0"),
        ({"rotate_range": (0.1, 0.1, 0.1)}, SHAPES["2d"], r"rotate_range must be one angle for a 2D input"),
        ({"scale_range": (0.1, 0.1, 0.1)}, SHAPES["2d"], r"scale_range must have 1 or 2 values, got \[0.1, 0.1, 0.1\]"),
    ],
    ids=["negative", "two_angles", "scale_one", "three_angles_2d", "scale_axes_2d"],
)
def test_rotation_and_scale_arguments_are_checked(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        RandElasticGrid(**kwargs)(torch.randn(shape)) if shape else RandElasticGrid(**kwargs)


# ------------------------------------------------------------------------------------------- threaded sampling
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("shape", [(1, 2, 40, 50, 30), (1, 1, 300, 250)], ids=["3d", "2d"])
def test_sample_in_chunks_equals_one_grid_sample(shape, mode, threads):
    """Chunks sampled as a batch of the expanded image give exactly ``F.grid_sample``'s values, for an output whose
    first axis the threads do not divide (33 rows), beyond the border (reflection) too."""
    from unet_monai.transforms.elastic import sample_in_chunks

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=generator)
    out_size = (33, 41, 25) if len(shape) == 5 else (33, 1500)
    grid = torch.rand(1, *out_size, len(shape) - 2, generator=generator) * 2.2 - 1.1
    expected = torch.nn.functional.grid_sample(image, grid, mode=mode, padding_mode="reflection", align_corners=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunked = sample_in_chunks(image, grid, mode, "reflection")
    finally:
        torch.set_num_threads(before)
    assert chunked.shape == expected.shape
    assert torch.equal(chunked, expected)
