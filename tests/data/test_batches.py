"""Every training batch is full: ``train.json``'s sampler draws ``full_batches(len(dataset), batch_size)`` patches
per pass, so one case gives batches of ``batch_size`` patches (they held one before), and a data set whose size is
a multiple of the batch size (the headline's 24 cases, batch 4) is sampled as by ``shuffle=True``. The same holds
per rank for ``multi_gpu_train.json``'s ``FullBatchDistributedSampler`` (its torchrun run is in
``tests/bundle/test_multi_gpu_train.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import RandRotate90d
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from unet_monai.data import FullBatchDistributedSampler, full_batches

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "unet"


@pytest.mark.parametrize(("cases", "batch", "expected"), [(1, 2, 2), (1, 1, 1), (3, 2, 4), (24, 4, 24), (5, 8, 8)])
def test_full_batches_rounds_the_pass_up_to_whole_batches(cases: int, batch: int, expected: int) -> None:
    assert full_batches(cases, batch) == expected


@pytest.mark.parametrize(("cases", "batch", "message"), [(0, 2, "no cases"), (3, 0, "at least 1")])
def test_full_batches_refuses_an_empty_split_or_batch(cases: int, batch: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        full_batches(cases, batch)


def parser_on_cases(tmp_path: Path, write_nifti: Callable[..., Path], cases: int, batch_size: int) -> ConfigParser:
    """train.json on a datalist of ``cases`` real 16 x 16 NIfTI cases (binary labels) in ``tmp_path``."""
    training = []
    for i in range(cases):
        write_nifti(f"img{i}.nii.gz", seed=i)
        label = write_nifti(f"lab{i}.nii.gz", label=True, seed=i)
        nib.save(nib.Nifti1Image((np.asarray(nib.load(label).dataobj) > 0).astype(np.uint8), np.eye(4)), label)
        training.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "case_id": f"case{i}"})
    manifest = tmp_path / "datalist.json"
    manifest.write_text(json.dumps({"labels": {"0": "background", "1": "blob"}, "training": training}))
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "train.json"))
    parser.update({"bundle_root": str(tmp_path), "manifest": str(manifest), "batch_size": batch_size,
                   "output_patch_size": [4, 4]})  # fmt: skip
    return parser


@pytest.mark.parametrize(("cases", "batch_size"), [(1, 2), (3, 2)])
def test_train_json_fills_every_batch(
    tmp_path: Path, write_nifti: Callable[..., Path], cases: int, batch_size: int
) -> None:
    """One case with batch 2 gives two patches per step (two different random crops of the case), three cases with
    batch 2 give two full batches per pass."""
    parser = parser_on_cases(tmp_path, write_nifti, cases, batch_size)
    loader = parser.get_parsed_content("train::dataloader")
    batches = list(loader)
    assert len(batches) == full_batches(cases, batch_size) // batch_size
    for batch in batches:
        assert batch["image"].shape[0] == batch_size and batch["label"].shape[0] == batch_size
    if cases == 1:
        first = batches[0]["image"]
        assert not torch.equal(first[0], first[1]), "the two patches of one case should be drawn independently"


def test_a_multiple_of_the_batch_size_is_sampled_as_shuffle_did(
    tmp_path: Path, write_nifti: Callable[..., Path]
) -> None:
    """Same seed, same order of cases as ``DataLoader(shuffle=True)``: the headline's sampling is unchanged."""
    parser = parser_on_cases(tmp_path, write_nifti, 4, 2)
    sampler = parser.get_parsed_content("train::sampler")
    assert isinstance(sampler, RandomSampler) and sampler.num_samples == 4
    torch.manual_seed(7)
    ours = list(sampler)
    torch.manual_seed(7)
    before = list(DataLoader(range(4), shuffle=True, batch_size=1).sampler)
    assert ours == before


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_patch_that_is_not_square_in_plane_stacks_into_batches(tmp_path: Path, batch_size: int) -> None:
    """A quarter turn swaps the first two sizes of an output patch of about 20 x 12 x 8: it is drawn only for batches
    of one, so two patches of one 3D case always stack (``RandRotate90d`` made the collate fail before)."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 20, 16)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "lab.nii.gz")
    manifest = tmp_path / "datalist.json"
    case = {"image": "img.nii.gz", "label": "lab.nii.gz", "case_id": "c"}
    manifest.write_text(json.dumps({"labels": {"0": "background", "1": "blob"}, "training": [case]}))
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "train.json"), str(BUNDLE / "train_3d.json")])
    parser.update({"bundle_root": str(tmp_path), "manifest": str(manifest), "batch_size": batch_size,
                   "output_patch_size": [20, 12, 8]})  # fmt: skip
    rotate = next(t for t in parser.get_parsed_content("train::random_transforms") if isinstance(t, RandRotate90d))
    assert rotate.prob == (0.5 if batch_size == 1 else 0.0)
    output = tuple(parser.get_parsed_content("network_def").output_shape(parser.get_parsed_content("patch_size")))
    assert output[0] != output[1]
    loader = parser.get_parsed_content("train::dataloader")
    for _ in range(3):
        for batch in loader:
            assert batch["image"].shape[0] == batch_size
            if batch_size > 1:
                assert tuple(batch["label"].shape[2:]) == output


@pytest.mark.parametrize(("cases", "ranks", "batch"), [(1, 2, 2), (1, 2, 1), (3, 2, 2), (5, 4, 3), (8, 2, 2)])
def test_every_rank_draws_whole_batches(cases: int, ranks: int, batch: int) -> None:
    """Each rank's pass is ``full_batches(ceil(cases / ranks), batch)`` long; together the ranks draw every case,
    none more than once more than another (permutations back to back); ``set_epoch`` reshuffles."""
    samplers = [FullBatchDistributedSampler(range(cases), batch, num_replicas=ranks, rank=r) for r in range(ranks)]
    per_rank = full_batches(-(-cases // ranks), batch)
    drawn = [list(s) for s in samplers]
    assert all(len(d) == len(s) == per_rank for d, s in zip(drawn, samplers, strict=True))
    counts = np.bincount(np.concatenate(drawn), minlength=cases)
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1, counts
    for s in samplers:
        s.set_epoch(1)
    if cases > 2:
        assert [list(s) for s in samplers] != drawn


def test_a_multiple_of_ranks_times_batch_is_sampled_as_torch_does() -> None:
    """16 cases on 2 ranks with batch 4: exactly torch's ``DistributedSampler(shuffle=True)``, epoch by epoch."""
    for epoch in (0, 3):
        for rank in (0, 1):
            ours = FullBatchDistributedSampler(range(16), 4, num_replicas=2, rank=rank, seed=5)
            torchs = DistributedSampler(range(16), num_replicas=2, rank=rank, shuffle=True, seed=5)
            ours.set_epoch(epoch)
            torchs.set_epoch(epoch)
            assert list(ours) == list(torchs)


def test_the_distributed_sampler_refuses_an_empty_split() -> None:
    with pytest.raises(ValueError, match="no cases"):
        FullBatchDistributedSampler([], 2, num_replicas=2, rank=0)


def test_multi_gpu_train_json_draws_whole_batches_per_rank(tmp_path: Path, write_nifti: Callable[..., Path]) -> None:
    """The overlay's sampler on a one-case datalist with batch 2, as rank 1 of 2 (set here; torchrun's process group
    gives them in a run): two patches per step, as ``DistributedSampler`` gave one."""
    parser = parser_on_cases(tmp_path, write_nifti, 1, 2)
    parser.read_config([str(BUNDLE / "train.json"), str(BUNDLE / "multi_gpu_train.json")])
    parser.update({"batch_size": 2, "manifest": str(tmp_path / "datalist.json"), "bundle_root": str(tmp_path),
                   "output_patch_size": [4, 4], "train::sampler#num_replicas": 2,
                   "train::sampler#rank": 1})  # fmt: skip
    sampler = parser.get_parsed_content("train::sampler")
    assert isinstance(sampler, FullBatchDistributedSampler)
    assert list(sampler) == [0, 0]
