"""The paper's weight map w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)): values by hand, class weights, instances,
spacing, a brute-force reference, the transform's shape checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, create_test_image_2d, create_test_image_3d
from scipy import ndimage

from unet_monai.transforms import BorderWeightMap, border_weight_map


def border(distance_sum_squared: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-distance_sum_squared / (2 * sigma**2))


def two_cells() -> np.ndarray:
    """5 x 9: cell A = rows 1-3, columns 1-2; cell B = rows 1-3, columns 6-7 (12 cell pixels, 33 background)."""
    label = np.zeros((5, 9), dtype=np.uint8)
    label[1:4, 1:3] = 1
    label[1:4, 6:8] = 1
    return label


# background pixel -> (d1 + d2)^2, by hand from the nearest pixel of each cell
HAND = {
    (0, 4): (math.sqrt(5) + math.sqrt(5)) ** 2,  # A at (1, 2), B at (1, 6)
    (2, 4): (2.0 + 2.0) ** 2,  # A at (2, 2), B at (2, 6)
    (2, 5): (3.0 + 1.0) ** 2,
    (2, 0): (1.0 + 6.0) ** 2,  # A at (2, 1), B at (2, 6)
    (4, 8): (math.sqrt(37) + math.sqrt(2)) ** 2,  # A at (3, 2), B at (3, 7)
}


@pytest.mark.parametrize("pixel", list(HAND), ids=[f"{r}-{c}" for r, c in HAND])
def test_two_cells_by_hand_unit_class_weights(pixel):
    weight = border_weight_map(two_cells(), class_weights=None)
    assert weight.dtype == np.float32
    assert weight[pixel] == pytest.approx(1.0 + border(HAND[pixel]), rel=1e-5)


@pytest.mark.parametrize("pixel", list(HAND), ids=[f"{r}-{c}" for r, c in HAND])
def test_two_cells_by_hand_balanced(pixel):
    """w_c = N / (K n_k): 45 / (2 * 33) on background, 45 / (2 * 12) in the cells."""
    weight = border_weight_map(two_cells(), class_weights="balanced", w0=8.0, sigma=3.0)
    assert weight[pixel] == pytest.approx(45 / 66 + border(HAND[pixel], w0=8.0, sigma=3.0), rel=1e-5)


@pytest.mark.parametrize(
    "class_weights,inside",
    [(None, 1.0), ("balanced", 45 / 24), ({0: 0.5, 1: 3.0}, 3.0)],
    ids=["none", "balanced", "mapping"],
)
def test_inside_cells_only_class_weight(class_weights, inside):
    label = two_cells()
    weight = border_weight_map(label, class_weights=class_weights)
    np.testing.assert_allclose(weight[label == 1], inside, rtol=1e-6)


def test_explicit_class_weights_mapping_on_background():
    weight = border_weight_map(two_cells(), class_weights={0: 0.5, 1: 3.0})
    assert weight[2, 4] == pytest.approx(0.5 + border(HAND[(2, 4)]), rel=1e-5)


def test_single_cell_gives_no_border_term():
    label = np.zeros((9, 11), dtype=np.uint8)
    label[2:6, 3:8] = 1
    weight = border_weight_map(label, class_weights="balanced")
    n_cell = 20
    expected = np.where(label == 1, 99 / (2 * n_cell), 99 / (2 * (99 - n_cell)))
    np.testing.assert_allclose(weight, expected, rtol=1e-6)


def test_w0_zero_gives_class_weights_only():
    np.testing.assert_allclose(border_weight_map(two_cells(), w0=0.0, class_weights=None), 1.0)


def test_cell_labels_selects_cell_classes():
    """A block of class 2 is a second cell by default (every nonzero class), not with cell_labels=[1]."""
    label = np.array([[1, 1, 0, 0, 0, 0, 2, 2, 2]], dtype=np.uint8)
    with_both = border_weight_map(label, class_weights=None)
    only_one = border_weight_map(label, cell_labels=[1], class_weights=None)
    np.testing.assert_allclose(with_both[0, 2:6], 1.0 + border(25.0), rtol=1e-6)  # d1 + d2 = 5 across the gap
    np.testing.assert_allclose(only_one, 1.0)


# --------------------------------------------------------------------------------------------- instances
def touching_instances() -> tuple[np.ndarray, np.ndarray]:
    """5 x 8: one class-1 block, rows 1-3, columns 1-6, split into instances A (columns 1-3) and B (4-6)."""
    label = np.zeros((5, 8), dtype=np.uint8)
    label[1:4, 1:7] = 1
    cells = np.zeros_like(label)
    cells[1:4, 1:4], cells[1:4, 4:7] = 1, 2
    return label, cells


def test_touching_instances_without_cells_are_one_cell():
    label, _ = touching_instances()
    np.testing.assert_allclose(border_weight_map(label, class_weights=None), 1.0)


def test_touching_instances_border_term_on_background_only():
    label, cells = touching_instances()
    weight = border_weight_map(label, cells, class_weights=None)
    np.testing.assert_allclose(weight[label == 1], 1.0)  # no border term inside cells, even on the contact
    assert weight[0, 3] == pytest.approx(1.0 + border((1.0 + math.sqrt(2)) ** 2), rel=1e-5)  # A (1, 3), B (1, 4)
    assert weight[0, 4] == pytest.approx(weight[0, 3], rel=1e-6)
    assert weight[2, 0] == pytest.approx(1.0 + border((1.0 + 4.0) ** 2), rel=1e-5)  # A (2, 1), B (2, 4)


def test_instance_ids_need_not_be_consecutive():
    label, cells = touching_instances()
    relabelled = np.where(cells == 2, 7, cells)
    np.testing.assert_allclose(border_weight_map(label, relabelled), border_weight_map(label, cells))


def test_cells_of_other_shape_rejected():
    label, cells = touching_instances()
    with pytest.raises(ValueError, match=r"cells must have the label's shape \(5, 8\), got \(5, 7\)"):
        border_weight_map(label, cells[:, :7])


# ----------------------------------------------------------------------------------------------- spacing
def gap_row() -> np.ndarray:
    return np.array([[1, 1, 0, 0, 0, 0, 1, 1, 1]], dtype=np.uint8)  # a 4-pixel gap: d1 + d2 = 5 pixels


def test_spacing_scales_distances():
    weight = border_weight_map(gap_row(), spacing=(1.0, 2.0), class_weights=None)
    np.testing.assert_allclose(weight[0, 2:6], 1.0 + border(10.0**2), rtol=1e-5)  # 5 pixels of 2 mm


def metatensor_label(label: np.ndarray, spacing) -> MetaTensor:
    affine = torch.eye(4, dtype=torch.float64)
    affine[: len(spacing), : len(spacing)] = torch.diag(torch.tensor(spacing, dtype=torch.float64))
    return MetaTensor(torch.from_numpy(label)[None], affine=affine)


def test_transform_units_mm_uses_metatensor_spacing():
    label = metatensor_label(gap_row(), (1.0, 2.0))
    in_mm = BorderWeightMap(units="mm", class_weights=None)(label)
    in_voxels = BorderWeightMap(units="voxel", class_weights=None)(label)
    torch.testing.assert_close(in_mm[0, 0, 2:6], torch.full((4,), 1.0 + border(100.0)))
    torch.testing.assert_close(in_voxels[0, 0, 2:6], torch.full((4,), 1.0 + border(25.0)))


def test_transform_units_mm_isotropic_equals_scaled_sigma():
    label = metatensor_label(two_cells(), (2.0, 2.0))
    in_mm = BorderWeightMap(units="mm", sigma=6.0)(label)
    in_voxels = BorderWeightMap(units="voxel", sigma=3.0)(label)
    torch.testing.assert_close(in_mm.as_tensor(), in_voxels.as_tensor())


# -------------------------------------------------------------------------------- brute-force reference
def reference(label: np.ndarray, w0: float, sigma: float, spacing) -> np.ndarray:
    """The definition over the whole image: every cell's distance map, sorted, the two smallest."""
    cells, num = ndimage.label(label != 0)
    distances = np.sort(
        np.stack([ndimage.distance_transform_edt(cells != i, sampling=spacing) for i in range(1, num + 1)]), axis=0
    )
    term = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    term[cells > 0] = 0
    return 1.0 + term


@pytest.mark.parametrize(
    "sigma,spacing", [(1.5, (1.0, 1.0)), (5.0, (1.0, 1.0)), (3.0, (1.0, 0.5))], ids=["sigma1.5", "sigma5", "aniso"]
)
def test_equals_definition_on_many_cells(sigma, spacing):
    """Each cell's distances are computed in its grown bounding box only: within w0 * 1e-6 of the definition."""
    _, seg = create_test_image_2d(64, 64, num_objs=8, rad_max=7, rad_min=3, random_state=np.random.RandomState(3))
    label = (seg > 0).astype(np.uint8)
    assert ndimage.label(label)[1] >= 4
    weight = border_weight_map(label, sigma=sigma, spacing=spacing, class_weights=None)
    np.testing.assert_allclose(weight, reference(label, 10.0, sigma, spacing), atol=2e-5, rtol=1e-5)


def test_3d_equals_definition_on_many_cells():
    """The 3D distances (ITK's Maurer transform; 2D uses scipy's) match the definition too, with anisotropic
    spacing."""
    _, seg = create_test_image_3d(40, 36, 20, num_objs=8, rad_max=6, rad_min=3, random_state=np.random.RandomState(1))
    label = (seg > 0).astype(np.uint8)
    assert ndimage.label(label)[1] >= 4
    spacing = (1.0, 0.8, 2.0)
    weight = border_weight_map(label, sigma=4.0, spacing=spacing, class_weights=None)
    np.testing.assert_allclose(weight, reference(label, 10.0, 4.0, spacing), atol=2e-5, rtol=1e-5)


def test_3d_symmetric_input_gives_symmetric_map():
    label = np.zeros((15, 10, 10), dtype=np.uint8)
    label[2:6, 3:7, 3:7] = 1
    label[9:13, 3:7, 3:7] = 1  # the mirror image of the first cube along every axis
    weight = BorderWeightMap()(torch.from_numpy(label)[None])[0].numpy()
    assert weight.shape == label.shape
    for axis in range(3):
        np.testing.assert_allclose(weight, np.flip(weight, axis), rtol=1e-6)
    np.testing.assert_allclose(weight, weight.transpose(0, 2, 1), rtol=1e-6)
    background = label.size / (2 * (label.size - 128))
    assert weight[7, 5, 5] == pytest.approx(background + border((2.0 + 2.0) ** 2), rel=1e-5)  # 2 from each cube


# ------------------------------------------------------------------------------------ class weight errors
def test_mapping_missing_a_label_value_rejected():
    label = np.array([[0, 1, 2, 2]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"class_weights has no weight for label values \[2\]"):
        border_weight_map(label, class_weights={0: 1.0, 1: 2.0})


def test_unknown_class_weights_string_rejected():
    with pytest.raises(ValueError, match="class_weights must be 'balanced', a mapping or None, got 'equal'"):
        border_weight_map(two_cells(), class_weights="equal")


# -------------------------------------------------------------------------------------- BorderWeightMap
@pytest.mark.parametrize("as_metatensor", [False, True], ids=["tensor", "metatensor"])
def test_transform_output_type_shape_dtype(as_metatensor):
    label = torch.from_numpy(two_cells())[None]
    if as_metatensor:
        label = MetaTensor(label, affine=torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64)))
    out = BorderWeightMap()(label)
    assert out.shape == (1, 5, 9) and out.dtype == torch.float32
    assert isinstance(out, MetaTensor) == as_metatensor
    if as_metatensor:
        torch.testing.assert_close(out.affine, label.affine)
    np.testing.assert_allclose(np.asarray(out)[0], border_weight_map(two_cells()), rtol=1e-6)


def test_transform_accepts_numpy_label():
    out = BorderWeightMap()(two_cells()[None])
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out[0].numpy(), border_weight_map(two_cells()), rtol=1e-6)


@pytest.mark.parametrize(
    "shape", [(2, 5, 9), (5, 9), (1, 1, 5, 9, 3), (1, 9)], ids=["two_channels", "no_channel", "5d", "1d"]
)
def test_transform_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"label must be \(1, H, W\) or \(1, H, W, D\), got shape"):
        BorderWeightMap()(torch.zeros(shape, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"units": "pixel"}, "units must be 'voxel' or 'mm', got 'pixel'"),
        ({"sigma": 0.0}, "sigma must be > 0 and w0 >= 0, got sigma=0.0, w0=10.0"),
        ({"w0": -1.0}, "sigma must be > 0 and w0 >= 0, got sigma=5.0, w0=-1.0"),
    ],
    ids=["units", "sigma", "w0"],
)
def test_transform_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BorderWeightMap(**kwargs)


def test_transform_with_cells_equals_function():
    label, cells = touching_instances()
    out = BorderWeightMap(class_weights=None)(torch.from_numpy(label)[None], torch.from_numpy(cells)[None])
    np.testing.assert_allclose(out[0].numpy(), border_weight_map(label, cells, class_weights=None), rtol=1e-6)
