"""Memory-mapped NIfTI input: views of the file, MONAI's metadata, batching without a copy, tiles z-scored as read."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import list_data_collate
from monai.transforms import EnsureChannelFirstd, LoadImaged, NormalizeIntensity

from unet_monai.inferers import AutocastInferer, OverlapTileInferer
from unet_monai.io import LoadMemmapNiftid, view_collate
from unet_monai.memory import release_pages
from unet_monai.networks import PaperUNet

AFFINE = np.array([[0.0, -0.8, 0.0, 12.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]])


def write_volume(path: Path, shape: tuple[int, ...] = (40, 36, 20), dtype: type = np.float32) -> np.ndarray:
    data = (np.random.default_rng(3).standard_normal(shape) * 50 + 100).astype(dtype)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return data


def test_loaded_image_is_a_view_of_the_file_with_monai_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii"
    data = write_volume(path)
    mapped = EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path)}))["image"]
    loaded = EnsureChannelFirstd("image")(LoadImaged("image", reader="NibabelReader", dtype=None)({"image": str(path)}))
    reference = loaded["image"]
    assert mapped.shape == (1, *data.shape) and mapped.dtype == torch.float32
    assert not mapped.is_contiguous()  # the file's Fortran order: no copy was made
    np.testing.assert_array_equal(mapped.numpy(), reference.numpy())
    np.testing.assert_allclose(np.asarray(mapped.affine), AFFINE, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped.affine), np.asarray(reference.affine))
    assert mapped.meta["filename_or_obj"] == str(path)
    assert list(mapped.meta["spatial_shape"]) == list(data.shape)
    # the tensor reads the file itself: change a voxel on disk, and the (copy-on-write) view sees it
    with open(path, "r+b") as f:
        offset = int(nib.load(path).dataobj.offset)
        f.seek(offset)
        f.write(np.float32(-7.0).tobytes())
    assert float(mapped[0, 0, 0, 0]) == -7.0


def test_int16_file_keeps_its_dtype(tmp_path: Path) -> None:
    path = tmp_path / "int.nii"
    write_volume(path, dtype=np.int16)
    assert LoadMemmapNiftid("image")({"image": str(path)})["image"].dtype == torch.int16


@pytest.mark.parametrize("kind", ["gzip", "scaled", "missing"])
def test_files_that_cannot_be_mapped_are_refused_by_name(tmp_path: Path, kind: str) -> None:
    data = np.ones((8, 8, 4), np.int16)
    if kind == "gzip":
        path = tmp_path / "ct.nii.gz"
        nib.save(nib.Nifti1Image(data, AFFINE), path)
        error, words = ValueError, "uncompressed .nii"
    elif kind == "scaled":
        path = tmp_path / "ct.nii"
        image = nib.Nifti1Image(data, AFFINE)
        image.header.set_slope_inter(2.0, -1024.0)
        nib.save(image, path)
        error, words = ValueError, "scl_slope 2.0"
    else:
        path, error, words = tmp_path / "absent.nii", FileNotFoundError, "no such file"
    with pytest.raises(error, match=words) as info:
        LoadMemmapNiftid("image")({"image": str(path)})
    assert str(path) in str(info.value)


def test_view_collate_shares_memory_and_matches_monai_metadata(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii"
    write_volume(path)
    sample = EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path), "case": "a"}))
    batch = view_collate([sample])
    reference = list_data_collate([sample])
    image = batch["image"]
    assert image.shape == (1, *sample["image"].shape) and image.is_batch
    assert image.data_ptr() == sample["image"].data_ptr()
    torch.testing.assert_close(image.as_tensor(), reference["image"].as_tensor())
    torch.testing.assert_close(image.meta["affine"], reference["image"].meta["affine"])
    assert image.meta["filename_or_obj"] == reference["image"].meta["filename_or_obj"]
    assert batch["case"] == reference["case"] == ["a"]
    two = view_collate([sample, sample])  # several cases: MONAI's collate
    assert two["image"].shape[0] == 2


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_normalising_tiles_equals_normalising_the_image(tmp_path: Path, padding: str) -> None:
    """Tiles z-scored with streamed statistics give the same output as MONAI's NormalizeIntensity on the image."""
    path = tmp_path / "ct.nii"
    write_volume(path, shape=(52, 44, 36))
    image = EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path)}))["image"]
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8), padding=padding).eval()
    margin = 4 if padding == "same" else None
    with torch.no_grad():
        ours = OverlapTileInferer(24, sw_batch_size=2, margin=margin, normalize=True)(image[None], net)
        reference = OverlapTileInferer(24, sw_batch_size=2, margin=margin)(
            NormalizeIntensity()(image.clone())[None], net
        )
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_constant_image_is_only_shifted() -> None:
    net = PaperUNet(2, 1, 1, features=(4, 8), padding="same").eval()
    x = torch.full((1, 1, 32, 32), 5.0)
    with torch.no_grad():
        ours = OverlapTileInferer(16, margin=4, normalize=True)(x, net)
        reference = net(torch.zeros_like(x))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_labels_in_an_unnamed_temporary_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = PaperUNet(2, 1, 2, features=(4, 8)).eval()
    x = torch.randn(1, 1, 70, 50)
    folder = tmp_path / "scratch"
    with torch.no_grad():
        in_ram = OverlapTileInferer(20, output="argmax")(x, net)
        mapped = OverlapTileInferer(20, output="argmax", memmap_dir=str(folder))(x, net)
    torch.testing.assert_close(mapped, in_ram)
    assert mapped.dtype == torch.uint8
    assert folder.is_dir() and not list(folder.iterdir())  # the file has no name: nothing is left behind
    with pytest.raises(ValueError, match="memmap_dir need output="):
        OverlapTileInferer(20, memmap_dir=str(folder))
    with pytest.raises(ValueError, match="not both"):
        OverlapTileInferer(20, output="argmax", memmap_dir=str(folder), output_file=str(tmp_path / "x.npy"))


def test_autocast_converts_tiles_not_the_volume(tmp_path: Path) -> None:
    """Channels-last is applied to what the network receives: a strided (memory-mapped) input is not copied whole,
    and the result equals the plain overlap-tile output."""
    path = tmp_path / "ct.nii"
    write_volume(path, shape=(48, 40, 32))
    image = EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path)}))["image"][None]
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8)).eval()
    seen: list[torch.Size] = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    tiles = OverlapTileInferer(16, normalize=True)
    with torch.no_grad():
        out = AutocastInferer(tiles, dtype="float32")(image, net)
        reference = tiles(image, net)
    torch.testing.assert_close(out, reference)
    assert all(shape[2:] != image.shape[2:] for shape in seen)


def test_non_finite_voxels_are_counted_across_slabs(tmp_path: Path) -> None:
    """CheckImage reads a mapped volume in slabs; NaN and infinity in different slabs are all counted and named."""
    from unet_monai.transforms import CheckImage
    from unet_monai.transforms.check import _count_non_finite

    path = tmp_path / "bad.nii"
    data = write_volume(path, shape=(20, 16, 12))
    data[3, 2, 0], data[7, 1, 11], data[19, 15, 6] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    image = EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path)}))["image"]
    assert _count_non_finite(image, slab_voxels=100) == (1, 2)  # slabs of one z-plane each
    with pytest.raises(ValueError, match="1 NaN and 2 infinite") as info:
        CheckImage(spatial_dims=3, channels=1)(image)
    assert str(path) in str(info.value)
    assert _count_non_finite(image) == (1, 2)  # one slab: +inf and -inf sum to NaN, still counted


def test_finite_voxels_whose_sum_overflows_are_not_counted() -> None:
    """The per-slab sum only decides where to count: a float32 sum that overflows to infinity counts nothing."""
    from unet_monai.transforms.check import _count_non_finite

    huge = torch.full((1, 64, 64), 3e38)
    assert not torch.isfinite(huge.sum())
    assert _count_non_finite(huge) == (0, 0)
    huge[0, 5, 5] = float("nan")
    assert _count_non_finite(huge) == (1, 0)


def mapped_resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path``, read from ``/proc/self/smaps`` (the kernel's own count,
    independent of the code under test)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and len(fields[1]) == 4:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[:1] == ["Rss:"]:
            total += int(fields[1])
    return total


needs_smaps = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")


@needs_smaps
def test_release_pages_drops_read_pages_and_keeps_every_value(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii"
    data = write_volume(path, shape=(64, 64, 64))
    image = LoadMemmapNiftid("image")({"image": str(path)})["image"]
    assert float(image.sum()) == pytest.approx(float(data.sum(dtype=np.float64)), rel=1e-4)  # every page read
    assert mapped_resident_kb(path) >= data.nbytes // 1024
    image[5, 6, 7] = -1.0  # a copy-on-write page: private memory, never released
    released = release_pages(image)
    assert released >= data.nbytes - 3 * 4096
    assert mapped_resident_kb(path) <= 3 * 4  # the written page and the partial pages at both ends
    expected = data.copy()
    expected[5, 6, 7] = -1.0
    np.testing.assert_array_equal(image.numpy(), expected)  # read again from the file; the written voxel kept
    in_ram = torch.randn(1 << 20)
    copy = in_ram.clone()
    assert release_pages(in_ram) == 0
    assert torch.equal(in_ram, copy)


@needs_smaps
def test_overlap_tile_keeps_a_row_of_a_mapped_volume_resident(tmp_path: Path) -> None:
    """Tiles run along the file's outermost axis and release the rows behind them: while the network runs, less
    than half of the mapped input is resident, the labels lie in the file's order, and they equal the labels of
    the same image in RAM (C order, so the tiles run in another order)."""
    path = tmp_path / "ct.nii"
    data = write_volume(path, shape=(40, 36, 128))
    image = view_collate([EnsureChannelFirstd("image")(LoadMemmapNiftid("image")({"image": str(path)}))])["image"]
    torch.manual_seed(0)
    net = PaperUNet(3, 1, 2, features=(4, 8)).eval()
    resident: list[int] = []
    hook = net.register_forward_pre_hook(lambda module, args: resident.append(mapped_resident_kb(path)))
    with torch.no_grad():
        labels = OverlapTileInferer(
            (20, 36, 16), output="argmax", normalize=True, memmap_dir=str(tmp_path / "scratch")
        )(image, net)  # 2 x 1 x 8 tiles: reading smaps takes a while in a torch process
    hook.remove()
    assert len(resident) > 4 and max(resident) < data.nbytes // 1024 // 2
    assert labels.stride()[2:] == (1, 40, 40 * 36)  # the input's (Fortran) order
    in_ram = torch.from_numpy(np.ascontiguousarray(data))[None, None]
    with torch.no_grad():
        reference = OverlapTileInferer((20, 36, 16), output="argmax", normalize=True)(in_ram, net)
    assert torch.equal(labels.as_tensor(), reference)
