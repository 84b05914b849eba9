"""OverlapTileInferer against whole-image inference, mirror_pad against numpy, and AutocastInferer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, sliding_window_inference
from torch import nn

from unet_monai.inferers import AutocastInferer, OverlapTileInferer, mirror_pad
from unet_monai.networks import PaperUNet


def valid_net(spatial_dims: int, features=(2, 4, 8), in_channels: int = 1, out_channels: int = 2) -> PaperUNet:
    return PaperUNet(spatial_dims, in_channels, out_channels, features=features, padding="valid").eval()


def whole_image_inference(net: PaperUNet, x: torch.Tensor) -> torch.Tensor:
    """One forward over the mirrored image: ``context`` voxels on the left, enough on the right for the
    output to cover the image, then crop the output to the image size. Padding by numpy, independently of
    mirror_pad (pads here are smaller than the image, where both agree; a single-voxel axis is repeated)."""
    spatial = tuple(x.shape[2:])
    ctx = net.context
    pads = [(ctx, n_in - n - ctx) for n, n_in in zip(spatial, net.input_shape_for(spatial))]
    assert all(n == 1 or 0 <= p < n for pad, n in zip(pads, spatial) for p in pad), "keep pads < size"
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0), *pads], mode="reflect"))
    with torch.no_grad():
        out = net(padded)
    return out[(slice(None), slice(None), *[slice(0, n) for n in spatial])]


# ---------------------------------------------------------------------------------------- overlap-tile
CASES = {
    "2d": (2, (3, 2, 45, 37), (16, 12)),  # tile output 16 x 12: 3 x 4 tiles, neither size divides the image
    "3d": (3, (2, 2, 26, 25, 24), (12, 8, 16)),  # 3 x 4 x 2 tiles
}


@pytest.mark.parametrize("sw_batch_size", [1, 5], ids=["sw1", "sw5"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_overlap_tile_equals_whole_image(case, sw_batch_size):
    spatial_dims, x_shape, roi = CASES[case]
    net = valid_net(spatial_dims, in_channels=x_shape[1], out_channels=3)
    x = torch.randn(x_shape)
    tile_out = net.output_shape(net.input_shape_for(roi))
    assert tile_out == roi  # these rois are sizes the network produces: several tiles along every axis
    assert all(n % t for n, t in zip(x_shape[2:], tile_out))
    with torch.no_grad():
        out = OverlapTileInferer(roi, sw_batch_size=sw_batch_size)(x, net)
    expected = whole_image_inference(net, x)
    assert out.shape == (x_shape[0], 3, *x_shape[2:])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_overlap_tile_equals_whole_image_three_poolings():
    net = valid_net(2, features=(2, 4, 8, 16))
    x = torch.randn(1, 1, 70, 53)
    with torch.no_grad():
        out = OverlapTileInferer((20, 16))(x, net)
    torch.testing.assert_close(out, whole_image_inference(net, x), atol=1e-5, rtol=0)


def test_overlap_tile_equals_whole_image_paper_depth():
    """Four poolings, as the paper: tile outputs (20) are not multiples of 16, tiles must still line up."""
    net = valid_net(2, features=(2, 4, 8, 16, 32))
    x = torch.randn(2, 1, 150, 130)
    with torch.no_grad():
        out = OverlapTileInferer(20, sw_batch_size=3)(x, net)
    torch.testing.assert_close(out, whole_image_inference(net, x), atol=1e-5, rtol=0)


def test_overlap_tile_single_slice_volume_is_mirrored():
    net = valid_net(3, features=(2, 4))
    x = torch.randn(1, 1, 20, 18, 1)
    with torch.no_grad():
        out = OverlapTileInferer(8)(x, net)
    torch.testing.assert_close(out, whole_image_inference(net, x), atol=1e-5, rtol=0)


def test_overlap_tile_error_at_tile_borders_no_larger():
    net = valid_net(2)
    x = torch.randn(2, 1, 61, 50)
    roi = (12, 16)
    tile_out = net.output_shape(net.input_shape_for(roi))
    with torch.no_grad():
        out = OverlapTileInferer(roi, sw_batch_size=4)(x, net)
    error = (out - whole_image_inference(net, x)).abs().amax(dim=(0, 1))  # (H, W)
    border = torch.zeros(error.shape, dtype=torch.bool)
    for axis, t in enumerate(tile_out):
        coords = torch.arange(error.shape[axis])
        near = ((coords % t) == 0) | ((coords % t) == t - 1)  # first and last voxel of every tile
        near[0] = near[-1] = False  # image borders are not tile borders
        border |= near.view(-1, 1) if axis == 0 else near.view(1, -1)
    assert border.any() and (~border).any()
    assert error[border].max() <= error[~border].max() + 1e-6
    assert error.max() < 1e-5


def test_overlap_tile_single_tile_and_data_parallel_wrapper():
    """A roi larger than the image gives one tile; a wrapper exposing ``.module`` is unwrapped."""
    net = valid_net(2)
    x = torch.randn(1, 1, 30, 26)
    with torch.no_grad():
        out = OverlapTileInferer(64)(x, nn.DataParallel(net))
    torch.testing.assert_close(out, whole_image_inference(net, x), atol=1e-5, rtol=0)


def test_overlap_tile_keeps_metatensor_metadata():
    net = valid_net(2)
    affine = torch.tensor(
        [[0.0, 2.0, 0.0, 5.0], [3.0, 0.0, 0.0, -7.5], [0.0, 0.0, 1.5, 2.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
    )
    x = MetaTensor(torch.randn(1, 1, 30, 26), affine=affine, meta={"filename_or_obj": "case_7.nii.gz"})
    with torch.no_grad():
        out = OverlapTileInferer(16)(x, net)
    assert isinstance(out, MetaTensor)
    assert out.shape == (1, 2, 30, 26)
    torch.testing.assert_close(out.affine, affine)
    assert out.meta["filename_or_obj"] == "case_7.nii.gz"


def test_overlap_tile_same_padding_equals_sliding_window():
    net = PaperUNet(2, 1, 2, features=(2, 4, 8), padding="same").eval()
    x = torch.randn(2, 1, 50, 37)
    roi = (16, 24)
    with torch.no_grad():
        out = OverlapTileInferer(roi, sw_batch_size=3, overlap=0.5, mode="gaussian")(x, net)
        expected = sliding_window_inference(x, roi, 3, net, overlap=0.5, mode="gaussian")
    assert out.shape == (2, 2, 50, 37)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


class _ScaledUNet(PaperUNet):
    """A PaperUNet whose forward takes an extra argument, to check that inferer arguments reach it."""

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x) * scale


@pytest.mark.parametrize("padding", ["valid", "same"], ids=["valid", "same"])
def test_overlap_tile_passes_extra_args_to_network(padding):
    net = _ScaledUNet(2, 1, 1, features=(2, 4, 8), padding=padding).eval()
    x = torch.randn(1, 1, 32, 32)
    inferer = OverlapTileInferer(16)
    with torch.no_grad():
        torch.testing.assert_close(inferer(x, net, 2.0), 2.0 * inferer(x, net), atol=1e-5, rtol=0)


def test_overlap_tile_rejects_other_networks():
    with pytest.raises(TypeError, match="must be a PaperUNet.*got Conv2d"):
        OverlapTileInferer(16)(torch.randn(1, 1, 32, 32), nn.Conv2d(1, 1, 3))


def test_overlap_tile_argument_checks():
    with pytest.raises(ValueError, match="sw_batch_size must be >= 1, got 0"):
        OverlapTileInferer(16, sw_batch_size=0)
    with pytest.raises(ValueError, match=r"roi_size must have 2 sizes .* got \(16, 16, 16\)"):
        OverlapTileInferer((16, 16, 16))(torch.randn(1, 1, 32, 32), valid_net(2))


# ------------------------------------------------------------------------------------------ mirror_pad
def numpy_reflect(x: torch.Tensor, pads) -> np.ndarray:
    return np.pad(x.numpy(), [(0, 0), (0, 0), *pads], mode="reflect")


SMALL_PADS = {
    "2d": ((6, 9), [(3, 5), (0, 8)]),
    "2d-zero": ((6, 9), [(0, 0), (0, 0)]),
    "3d": ((5, 7, 4), [(4, 1), (2, 6), (3, 3)]),
}


@pytest.mark.parametrize("case", list(SMALL_PADS), ids=list(SMALL_PADS))
def test_mirror_pad_equals_numpy_reflect(case):
    shape, pads = SMALL_PADS[case]
    x = torch.randn(2, 3, *shape)
    torch.testing.assert_close(mirror_pad(x, pads).numpy(), numpy_reflect(x, pads), atol=0, rtol=0)


LARGE_PADS = [
    pytest.param((3, 5), [(8, 8), (9, 9)], id="symmetric-2d"),
    pytest.param((2, 3, 4), [(7, 7), (5, 5), (10, 10)], id="symmetric-3d"),
    pytest.param((4, 6), [(5, 5), (2, 1)], id="one-axis-large"),
    pytest.param((1, 1), [(2, 3), (4, 0)], id="single-voxel"),
    pytest.param((3, 5), [(8, 1), (0, 0)], id="asymmetric-8-1"),
    pytest.param((5, 4), [(0, 0), (1, 12)], id="asymmetric-1-12"),
    pytest.param((4, 5), [(8, 36), (0, 0)], id="pads-8-36"),
    pytest.param((1, 5), [(0, 0), (2, 3)], id="size-one-axis"),
]


@pytest.mark.parametrize("shape,pads", LARGE_PADS)
def test_mirror_pad_larger_than_image_reflects_repeatedly(shape, pads):
    """numpy's "reflect" handles pads wider than the axis by repeated reflection (period 2 * (size - 1))."""
    x = torch.randn(1, 2, *shape)
    torch.testing.assert_close(mirror_pad(x, pads).numpy(), numpy_reflect(x, pads), atol=0, rtol=0)


@pytest.mark.parametrize("size,pads", [(3, (7, 6)), (4, (1, 12)), (5, (20, 3))], ids=["3", "4", "5"])
def test_numpy_reflect_is_repeated_reflection(size, pads):
    """The reference itself: numpy's reflect of a wide pad is the mirror sequence of period 2 * (size - 1)."""
    period = 2 * (size - 1)
    phase = [(p - pads[0]) % period for p in range(pads[0] + size + pads[1])]
    expected = [k if k < size else period - k for k in phase]
    np.testing.assert_array_equal(np.pad(np.arange(size), pads, mode="reflect"), expected)


# -------------------------------------------------------------------------------------------- autocast
@pytest.mark.parametrize(
    "spatial_dims,inner",
    list(itertools.product([2, 3], ["simple", "overlap-tile"])),
    ids=lambda v: str(v),
)
def test_autocast_bf16_output_float32_close_to_fp32(spatial_dims, inner):
    net = valid_net(spatial_dims)
    x = torch.randn(2, 1, *net.input_shape_for((12, 8, 4)[:spatial_dims]))
    inferer = SimpleInferer() if inner == "simple" else OverlapTileInferer(24)
    with torch.no_grad():
        expected = inferer(x, net)
        out = AutocastInferer(inferer, dtype="bfloat16")(x, net)
    assert out.dtype == torch.float32
    assert out.shape == expected.shape
    assert (out - expected).abs().max() / expected.abs().max() < 0.05
    assert not torch.equal(out, expected)  # bf16 really ran


def test_autocast_float32_is_plain_inference_and_keeps_gradients():
    net = valid_net(2)
    x = torch.randn(2, 1, *net.input_shape_for((8, 8)))
    out = AutocastInferer(dtype="float32")(x, net)
    with torch.no_grad():
        torch.testing.assert_close(out, net(x), atol=1e-5, rtol=0)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in net.parameters())


def test_autocast_hands_the_network_plain_tensors_and_returns_the_metadata():
    """A MetaTensor batch (what MONAI's trainers pass) reaches the network unwrapped, channels-last; the output is a
    MetaTensor with the input's metadata, as from MONAI's SimpleInferer."""
    net = valid_net(2)
    seen = []

    def network(x):
        seen.append((type(x), x.is_contiguous(memory_format=torch.channels_last)))
        return net(x)

    x = MetaTensor(torch.randn(2, 1, *net.input_shape_for((8, 8))), affine=torch.diag(torch.tensor([2.0, 3, 1, 1])))
    out = AutocastInferer(dtype="float32")(x, network)
    assert seen == [(torch.Tensor, True)]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)
    with torch.no_grad():
        torch.testing.assert_close(out.as_tensor(), net(x.as_tensor()), atol=1e-5, rtol=0)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_autocast_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="dtype must be one of .* got 'int8'"):
        AutocastInferer(dtype="int8")


# ---------------------------------------------------------------------------------------- streamed outputs
@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_argmax_output_equals_argmax_of_logits(spatial_dims):
    net = valid_net(spatial_dims, out_channels=3)
    x = torch.randn(2, 1, *([23] * spatial_dims))
    with torch.no_grad():
        logits = OverlapTileInferer(8, sw_batch_size=3)(x, net)
        labels = OverlapTileInferer(8, sw_batch_size=3, output="argmax")(x, net)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 1, *x.shape[2:])
    torch.testing.assert_close(labels, logits.argmax(1, keepdim=True).to(torch.uint8))


def test_threshold_output_for_one_channel_networks():
    net = valid_net(2, out_channels=1)
    x = torch.randn(1, 1, 30, 17)
    with torch.no_grad():
        logits = OverlapTileInferer(12)(x, net)
        labels = OverlapTileInferer(12, output="threshold")(x, net)
    torch.testing.assert_close(labels, (torch.sigmoid(logits) > 0.5).to(torch.uint8))
    with pytest.raises(ValueError, match="one-channel"), torch.no_grad():
        OverlapTileInferer(12, output="threshold")(x, valid_net(2, out_channels=2))


def test_memory_mapped_input_and_output(tmp_path):
    """A memory-mapped input gives the in-RAM result; the label map lands in a memory-mapped .npy file."""
    net = valid_net(3, out_channels=2)
    data = np.random.default_rng(0).standard_normal((1, 1, 26, 19, 21)).astype(np.float32)
    mapped = np.lib.format.open_memmap(tmp_path / "image.npy", mode="w+", dtype=np.float32, shape=data.shape)
    mapped[:] = data
    mapped.flush()
    source = torch.from_numpy(np.load(tmp_path / "image.npy", mmap_mode="r+"))
    out_file = tmp_path / "labels.npy"
    with torch.no_grad():
        expected = OverlapTileInferer(8, output="argmax")(torch.from_numpy(data), net)
        result = OverlapTileInferer(8, output="argmax", output_file=str(out_file))(source, net)
    torch.testing.assert_close(result, expected)
    np.testing.assert_array_equal(np.load(out_file, mmap_mode="r"), expected.numpy())


def test_same_padding_argmax_equals_monai_sliding_window():
    net = PaperUNet(2, 1, 3, features=(2, 4, 8), padding="same").eval()
    x = torch.randn(1, 1, 40, 36)
    with torch.no_grad():
        expected = sliding_window_inference(x, (16, 16), 2, net, overlap=0.5, mode="gaussian")
        labels = OverlapTileInferer((16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian", output="argmax")(x, net)
    torch.testing.assert_close(labels, expected.argmax(1, keepdim=True).to(torch.uint8))


def test_output_argument_checks():
    with pytest.raises(ValueError, match="output must be one of"):
        OverlapTileInferer(8, output="probabilities")
    with pytest.raises(ValueError, match="output_file and memmap_dir need"):
        OverlapTileInferer(8, output_file="labels.npy")


def test_same_padding_margin_tiling_equals_whole_image_inside():
    """With a margin at least the net's reach, tiles of a same net give the whole-image result."""
    # reach per side of a same net with 2 poolings: two 3x3 convs per level, 2 * (1 + 2 + 4) in the encoder,
    # 2 * (2 + 1) in the decoder, up to 3 more from the pooling cells: 23 voxels
    net = PaperUNet(2, 1, 2, features=(2, 4, 8), padding="same").eval()
    x = torch.randn(1, 1, 128, 112)
    with torch.no_grad():
        whole = net(x)
        tiled = OverlapTileInferer(64, margin=24, sw_batch_size=4)(x, net)
    inner = (slice(None), slice(None), slice(24, -24), slice(24, -24))  # beyond the reach of the image border
    torch.testing.assert_close(tiled[inner], whole[inner], atol=1e-5, rtol=0)
    assert tiled.shape == whole.shape
    with pytest.raises(ValueError, match="margin"):
        OverlapTileInferer(32, margin=-1)


@pytest.mark.parametrize("padding", ["valid", "same"], ids=["valid", "same"])
@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_result_does_not_depend_on_the_input_memory_order(spatial_dims, padding):
    """Tiles run along the input's outermost axis in memory, so a Fortran-ordered image (a NIfTI file) is tiled in
    another order than a C-ordered one. Both give the same result, also where neighbouring windows of a
    same-padding net overlap and disagree (a margin below the net's reach): the tile with the largest start wins."""
    net = PaperUNet(spatial_dims, 1, 2, features=(2, 4, 8), padding=padding).eval()
    shape = (1, 1, 45, 37) if spatial_dims == 2 else (2, 1, 27, 22, 25)
    x = torch.randn(shape)
    reversed_axes = (0, 1, *range(x.dim() - 1, 1, -1))
    fortran = x.permute(reversed_axes).contiguous().permute(reversed_axes)  # same values, spatial axes reversed
    assert torch.equal(fortran, x) and fortran.stride()[2] == 1
    margin = 3 if padding == "same" else None  # windows of 12, centres of 6 every 4 voxels: they overlap
    with torch.no_grad():
        ordered = OverlapTileInferer(8, sw_batch_size=3, margin=margin)(x, net)
        reordered = OverlapTileInferer(8, sw_batch_size=3, margin=margin)(fortran, net)
    assert torch.equal(ordered, reordered)
