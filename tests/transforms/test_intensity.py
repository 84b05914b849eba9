"""NormalizeByModality(d): one scheme per channel (nnU-Net's CT, a HU window, MR z-scores), their errors, and
foreground_intensity_stats, the data-set statistics the CT scheme takes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged

from unet_monai.transforms import NormalizeByModality, NormalizeByModalityd, ct_scheme, foreground_intensity_stats

CT = {"scheme": "ct", "clip": [-958.0, 327.0], "mean": 82.9, "std": 136.9}


def ct_volume(seed: int = 0, shape=(12, 10, 8)) -> torch.Tensor:
    """(1, *shape) HU-like values spread well beyond the clip range."""
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 600, (1, *shape)).astype(np.float32))


def test_ct_clips_then_zscores_with_the_given_statistics():
    img = ct_volume()
    out = NormalizeByModality([CT])(img)
    expected = (np.clip(img.numpy(), -958.0, 327.0) - 82.9) / 136.9
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32


def test_window_maps_a_min_to_b_min_and_a_max_to_b_max_and_clips():
    img = torch.tensor([[[-1000.0, -57.0, 53.5, 164.0, 3000.0]]])
    out = NormalizeByModality([{"scheme": "window", "a_min": -57, "a_max": 164}])(img)
    np.testing.assert_allclose(out.numpy().ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_mr_zscores_each_case_over_all_voxels():
    img = torch.rand(1, 9, 8, 7) * 400 + 50
    out = NormalizeByModality([{"scheme": "mr"}])(img)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std(unbiased=False)) - 1) < 1e-4


def test_mr_nonzero_leaves_zeros_and_zscores_the_rest():
    img = torch.rand(1, 9, 8, 7) * 400 + 50
    img[:, :3] = 0
    out = NormalizeByModality([{"scheme": "mr_nonzero"}])(img)
    inside = out[img != 0]
    assert torch.all(out[:, :3] == 0)
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std(unbiased=False)) - 1) < 1e-4


def test_mr_mask_takes_statistics_under_the_mask_and_applies_them_everywhere():
    img = torch.rand(1, 9, 8, 7) * 400 + 50
    mask = torch.zeros(1, 9, 8, 7, dtype=torch.uint8)
    mask[:, 2:6, 2:6] = 1
    out = NormalizeByModalityd("image", [{"scheme": "mr_mask"}], mask_key="mask")({"image": img, "mask": mask})
    inside = img[mask.bool()]
    expected = (img - inside.mean()) / inside.std(unbiased=False)
    torch.testing.assert_close(out["image"], expected, rtol=1e-5, atol=1e-5)


def test_each_channel_gets_its_own_scheme():
    ct, mr = ct_volume(1), torch.rand(1, 12, 10, 8) * 300
    mr[:, :2] = 0
    out = NormalizeByModality([CT, {"scheme": "mr_nonzero"}])(torch.cat([ct, mr]))
    torch.testing.assert_close(out[:1], NormalizeByModality([CT])(ct))
    torch.testing.assert_close(out[1:], NormalizeByModality([{"scheme": "mr_nonzero"}])(mr))


def test_none_passes_the_channel_and_the_input_is_not_changed_in_place():
    img = MetaTensor(ct_volume(), affine=torch.diag(torch.tensor([0.8, 0.8, 5.0, 1.0])))
    before = img.clone()
    out = NormalizeByModality([{"scheme": "none"}])(img)
    assert torch.equal(out.as_subclass(torch.Tensor), before.as_subclass(torch.Tensor))
    NormalizeByModality([CT])(img)
    assert torch.equal(img.as_subclass(torch.Tensor), before.as_subclass(torch.Tensor))
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, img.affine)


def test_channel_count_that_differs_names_the_file(tmp_path):
    path = tmp_path / "case_007_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.eye(4)), str(path))
    data = EnsureChannelFirstd("image")(LoadImaged("image", image_only=True)({"image": str(path)}))
    norm = NormalizeByModalityd("image", [CT, {"scheme": "mr_nonzero"}])
    with pytest.raises(
        ValueError, match=r"case_007_0000\.nii\.gz must have 2 channel\(s\).*got 1 in shape \(1, 6, 5, 4\)"
    ):
        norm(data)


@pytest.mark.parametrize(
    "schemes, match",
    [
        ([{"scheme": "ctt"}], r"schemes\[0\]\['scheme'\] must be one of"),
        ([{"scheme": "ct", "clip": [-1, 1], "mean": 0}], r"missing \['std'\]"),
        ([{"scheme": "mr", "nonzero": True}], r"unknown \['nonzero'\]"),
        ([{"scheme": "ct", "clip": [-1, 1], "mean": 0, "std": 0}], r"\['std'\] must be > 0"),
        ([{"scheme": "ct", "clip": [5, 1], "mean": 0, "std": 1}], r"\['clip'\] must be \[lower, upper\]"),
        ([{"scheme": "window", "a_min": 5, "a_max": 5}], r"must have a_min < a_max"),
        ([], r"schemes must be a non-empty list"),
        ({"scheme": "mr"}, r"schemes must be a non-empty list"),
        (["mr"], r"schemes\[0\] must be a dict"),
    ],
    ids=["unknown", "missing", "typo", "std0", "clip-order", "window", "empty", "dict", "string"],
)
def test_bad_schemes_are_refused(schemes, match):
    with pytest.raises(ValueError, match=match):
        NormalizeByModality(schemes)


def test_mr_mask_needs_a_mask_key_and_warns_on_an_empty_mask():
    with pytest.raises(ValueError, match="mask_key must be given"):
        NormalizeByModalityd("image", [{"scheme": "mr_mask"}])
    img = torch.rand(1, 5, 5) * 10
    with pytest.warns(RuntimeWarning, match="mask is empty"):
        out = NormalizeByModality([{"scheme": "mr_mask"}])(img, mask=torch.zeros(1, 5, 5))
    torch.testing.assert_close(out, NormalizeByModality([{"scheme": "mr"}])(img))
    with pytest.raises(ValueError, match=r"mask .* must have the spatial shape \(5, 5\)"):
        NormalizeByModality([{"scheme": "mr_mask"}])(img, mask=torch.ones(1, 4, 5))


def test_a_bundle_config_builds_it_from_json():
    config = json.loads(
        '{"norm": {"_target_": "unet_monai.transforms.NormalizeByModalityd", "keys": "image", "schemes": '
        '[{"scheme": "ct", "clip": [-958, 327], "mean": 82.9, "std": 136.9}, {"scheme": "mr_nonzero"}]}}'
    )
    norm = ConfigParser(config).get_parsed_content("norm")
    out = norm({"image": torch.cat([ct_volume(), torch.rand(1, 12, 10, 8)])})
    assert out["image"].shape == (2, 12, 10, 8)


# -------------------------------------------------------------------------------- foreground statistics
def cases(n: int = 3, channels: int = 2, shape=(10, 9, 8)):
    rng = np.random.default_rng(5)
    images, labels = [], []
    for i in range(n):
        image = rng.normal(100 * (i + 1), 20, (channels, *shape)).astype(np.float32)
        label = np.zeros((1, *shape), np.uint8)
        label[0, 2:6, 3:7, 1 + i : 5 + i] = 1 + i % 2
        images.append(image)
        labels.append(label)
    return images, labels


def test_stats_are_nnunets_sampling_of_the_foreground():
    images, labels = cases()
    stats = foreground_intensity_stats(images, labels, num_samples=50, seed=1234)
    kept = [[], []]
    for image, label in zip(images, labels):
        rs = np.random.RandomState(1234)  # a fresh sampler per case, channels in turn, as nnU-Net
        for c in range(2):
            kept[c].append(rs.choice(image[c][label[0] > 0], 50, replace=True))
    for c in range(2):
        values = np.concatenate(kept[c]).astype(np.float64)
        assert stats[c]["num_samples"] == 150
        assert stats[c]["mean"] == pytest.approx(values.mean())
        assert stats[c]["std"] == pytest.approx(values.std())
        assert stats[c]["percentile_00_5"] == pytest.approx(np.percentile(values, 0.5))
        assert stats[c]["percentile_99_5"] == pytest.approx(np.percentile(values, 99.5))


def test_stats_stream_from_files_and_generators(tmp_path):
    images, labels = cases(channels=1)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        image_path, label_path = tmp_path / f"img{i}.nii.gz", tmp_path / f"lab{i}.nii.gz"
        nib.save(nib.Nifti1Image(image[0], np.eye(4)), str(image_path))
        nib.save(nib.Nifti1Image(label[0], np.eye(4)), str(label_path))
        paths.append((image_path, label_path))
    from_files = foreground_intensity_stats((p for p, _ in paths), (q for _, q in paths), num_samples=40)
    from_arrays = foreground_intensity_stats(images, labels, num_samples=40)
    assert from_files[0] == pytest.approx(from_arrays[0])


def test_stats_ignore_index_is_not_foreground():
    image = np.zeros((1, 6, 6), np.float32)
    label = np.zeros((1, 6, 6), np.uint8)
    image[0, :2], label[0, :2] = 10.0, 1
    image[0, 4:], label[0, 4:] = 1000.0, 255
    assert foreground_intensity_stats([image], [label], ignore_index=255)[0]["max"] == 10.0
    assert foreground_intensity_stats([image], [label])[0]["max"] == 1000.0


def test_ct_scheme_from_stats_normalises_the_foreground_to_zero_mean():
    images, labels = cases(n=1, channels=1)
    stats = foreground_intensity_stats(images, labels, num_samples=100000)
    scheme = ct_scheme(stats[0])
    assert scheme["clip"] == [stats[0]["percentile_00_5"], stats[0]["percentile_99_5"]]
    out = NormalizeByModality([scheme])(torch.from_numpy(images[0]))
    fg = torch.from_numpy(labels[0] > 0)
    assert abs(float(out[fg].mean())) < 0.05


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda im, lb: ([im[0], im[1][:1]], lb[:2]), r"must have 2 channel\(s\) as the first case, got 1"),
        (lambda im, lb: (im[:1], [lb[0][:, :5]]), r"label labels\[0\] must have shape \(1, \*spatial\)"),
        (lambda im, lb: (im[:2], lb[:1]), "labels must have one entry per image, got fewer than 2"),
        (lambda im, lb: (im[:1], lb[:2]), "labels must have one entry per image, got more than 1"),
        (lambda im, lb: (im[:1], [np.zeros_like(lb[0])]), "must hold foreground"),
    ],
    ids=["channels", "shape", "fewer-labels", "more-labels", "no-foreground"],
)
def test_stats_errors(make, match):
    images, labels = cases()
    with pytest.raises(ValueError, match=match):
        foreground_intensity_stats(*make(images, labels))


def test_stats_read_one_file_per_channel(tmp_path):
    images, labels = cases(n=2, channels=2)
    image_files, label_files = [], []
    for i, (image, label) in enumerate(zip(images, labels)):
        channels = []
        for c in range(2):
            channels.append(str(tmp_path / f"case{i}_{c:04d}.nii.gz"))
            nib.save(nib.Nifti1Image(image[c], np.eye(4)), channels[-1])
        image_files.append(channels)
        label_files.append(str(tmp_path / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label[0], np.eye(4)), label_files[-1])
    from_files = foreground_intensity_stats(image_files, label_files, num_samples=30)
    from_arrays = foreground_intensity_stats(images, labels, num_samples=30)
    assert len(from_files) == 2
    for c in range(2):
        assert from_files[c] == pytest.approx(from_arrays[c])
