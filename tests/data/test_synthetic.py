"""The synthetic EM data set: determinism, label properties, files on disk, reuse and regeneration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet_monai.data import make_synthetic_em, synthetic_em_volume
from unet_monai.io import load_manifest

SHAPES = {"2d": (64, 48), "3d": (32, 32, 24)}
SMALL = dict(num_training=2, num_validation=1, num_test=1)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_same_seed_same_volume(shape):
    image_a, label_a = synthetic_em_volume(shape, seed=3)
    image_b, label_b = synthetic_em_volume(shape, seed=3)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_different_seeds_differ(shape):
    image_a, label_a = synthetic_em_volume(shape, seed=3)
    image_b, label_b = synthetic_em_volume(shape, seed=4)
    assert not np.array_equal(image_a, image_b)
    assert not np.array_equal(label_a, label_b)


@pytest.mark.parametrize(
    "shape", [(64, 64), (96, 80), (32, 32, 24), (40, 32, 32)], ids=["2d-64", "2d-96x80", "3d-32", "3d-40"]
)
@pytest.mark.parametrize("seed", [0, 1, 7], ids=["seed0", "seed1", "seed7"])
def test_volume_properties(shape, seed):
    image, label = synthetic_em_volume(shape, seed=seed)
    assert image.shape == shape and label.shape == shape
    assert image.dtype == np.float32
    assert label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1}
    assert 0.1 <= label.mean() <= 0.45
    assert np.isfinite(image).all()
    # membrane is darker than cell interior on average: the label is visible in the image
    assert image[label == 1].mean() < image[label == 0].mean() - 0.1


@pytest.mark.parametrize(
    "shape,pattern",
    [((64,), r"2D or 3D .* got \(64,\)"), ((64, 7), r"every size >= 8 .* got \(64, 7\)"), ((8,) * 4, "2D or 3D")],
    ids=["1d", "too-small", "4d"],
)
def test_volume_rejects_bad_shapes(shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        synthetic_em_volume(shape, seed=0)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _age(paths: list[Path]) -> None:
    """Set every file's mtime one day back, so that any rewrite shows as a newer mtime."""
    for path in paths:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 86_400 * 10**9))


@pytest.mark.parametrize("spatial_dims", [2, 3], ids=["2d", "3d"])
def test_make_synthetic_em_writes_files_and_datalist(tmp_path, spatial_dims):
    shape = SHAPES[f"{spatial_dims}d"]
    datalist = Path(make_synthetic_em(tmp_path, spatial_dims=spatial_dims, shape=shape, seed=5, **SMALL))
    assert datalist == tmp_path / "datalist.json"
    content = json.loads(datalist.read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    assert content["generator"]["shape"] == list(shape)
    names = {p.relative_to(tmp_path).as_posix() for p in _files(tmp_path)}
    assert names == {
        "datalist.json",
        "imagesTr/em_000.nii.gz",
        "imagesTr/em_001.nii.gz",
        "imagesTr/em_002.nii.gz",
        "labelsTr/em_000.nii.gz",
        "labelsTr/em_001.nii.gz",
        "labelsTr/em_002.nii.gz",
        "imagesTs/em_003.nii.gz",
    }

    training = load_manifest(datalist, "training")
    assert [Path(item["image"]).name for item in training] == ["em_000.nii.gz", "em_001.nii.gz"]
    assert all(Path(item["image"]).is_absolute() and Path(item["label"]).is_file() for item in training)
    assert len(load_manifest(datalist, "validation")) == 1
    (test_item,) = load_manifest(datalist, "test")
    assert "label" not in test_item

    # the files hold the volumes synthetic_em_volume makes for case i (seed * 100_003 + i)
    image, label = synthetic_em_volume(shape, seed=5 * 100_003 + 1)
    np.testing.assert_array_equal(nib.load(training[1]["image"]).get_fdata(dtype=np.float32), image)
    np.testing.assert_array_equal(np.asarray(nib.load(training[1]["label"]).dataobj), label)


def test_make_synthetic_em_reuses_existing_data(tmp_path):
    make_synthetic_em(tmp_path, shape=(32, 32), **SMALL)
    files = _files(tmp_path)
    _age(files)
    before = {p: p.stat().st_mtime_ns for p in files}
    make_synthetic_em(tmp_path, shape=(32, 32), **SMALL)
    assert {p: p.stat().st_mtime_ns for p in _files(tmp_path)} == before


@pytest.mark.parametrize(
    "changed",
    [dict(seed=1), dict(shape=(40, 32)), dict(num_training=3)],
    ids=["seed", "shape", "num_training"],
)
def test_make_synthetic_em_regenerates_on_changed_arguments(tmp_path, changed):
    arguments = dict(shape=(32, 32), seed=0, **SMALL)
    make_synthetic_em(tmp_path, **arguments)
    image_path = tmp_path / "imagesTr" / "em_000.nii.gz"
    old_image = nib.load(image_path).get_fdata()
    _age(_files(tmp_path))
    aged = image_path.stat().st_mtime_ns
    datalist = Path(make_synthetic_em(tmp_path, **{**arguments, **changed}))
    assert image_path.stat().st_mtime_ns > aged
    generator = json.loads(datalist.read_text())["generator"]
    for key, value in changed.items():
        assert generator[key] == (list(value) if isinstance(value, tuple) else value)
    new_image = nib.load(image_path).get_fdata()
    if "num_training" in changed:
        np.testing.assert_array_equal(new_image, old_image)  # same seed, same case: same volume
        assert len(load_manifest(datalist, "training")) == 3
    else:
        assert new_image.shape != old_image.shape or not np.array_equal(new_image, old_image)


def test_make_synthetic_em_rewrites_a_broken_datalist(tmp_path):
    make_synthetic_em(tmp_path, shape=(32, 32), **SMALL)
    (tmp_path / "datalist.json").write_text("{ not json")
    datalist = make_synthetic_em(tmp_path, shape=(32, 32), **SMALL)
    assert len(load_manifest(datalist, "training")) == 2


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(spatial_dims=4), "spatial_dims must be 2 or 3, got 4"),
        (dict(spatial_dims=2, shape=(32, 32, 32)), r"shape must have 2 sizes .* got \(32, 32, 32\)"),
        (dict(spatial_dims=3, shape=(32, 32)), r"shape must have 3 sizes .* got \(32, 32\)"),
        (dict(shape=(32, 4)), r"every size >= 8"),
    ],
    ids=["spatial_dims", "3d-shape-for-2d", "2d-shape-for-3d", "too-small"],
)
def test_make_synthetic_em_rejects_bad_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_synthetic_em(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / "datalist.json").exists()
