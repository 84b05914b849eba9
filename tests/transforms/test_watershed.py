"""Watershed lines between cells of a membrane probability map, and their use on logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from unet_monai.metrics.challenge import challenge_scores, threshold_sweep
from unet_monai.metrics.rand_info import cells_from_boundaries
from unet_monai.transforms import WatershedLines, WatershedLinesd, watershed_lines

SHARED_ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012"


def two_cells_with_a_gap(shape: tuple[int, ...] = (40, 60)) -> np.ndarray:
    """A membrane probability map: a vertical membrane (column 30, probability 0.9, a ramp to 0.05 around it)
    with a three-voxel gap of probability at most 0.4 halfway down."""
    columns = np.arange(shape[1])
    profile = 0.05 + 0.85 * np.exp(-((columns - 30) ** 2) / 4.0)
    probability = np.broadcast_to(profile.reshape((1, -1) + (1,) * (len(shape) - 2)), shape).copy()
    probability[18:21, 27:34] = np.minimum(probability[18:21, 27:34], 0.4)
    return probability


def test_lines_close_a_gap_that_thresholding_merges() -> None:
    probability = two_cells_with_a_gap()
    assert cells_from_boundaries(probability > 0.5).max() == 1  # thresholded: the gap merges the two cells
    lines = watershed_lines(probability, seed_threshold=0.2, min_seed_size=1)
    cells = cells_from_boundaries(lines | (probability > 0.5))
    assert cells.max() == 2
    assert np.array_equal(np.flatnonzero(lines.any(axis=0)), [30])  # one voxel wide, on the ridge


def test_lines_in_3d() -> None:
    probability = two_cells_with_a_gap((40, 60, 6))
    lines = watershed_lines(probability, seed_threshold=0.2, min_seed_size=1)
    assert cells_from_boundaries(lines | (probability > 0.5)).max() == 2


def test_small_seeds_are_dropped_and_one_seed_draws_no_line() -> None:
    probability = np.full((30, 30), 0.9)
    probability[5:25, 2:12] = 0.05  # one large seed
    probability[10, 20] = 0.05  # a single voxel: noise inside a membrane
    assert cells_from_boundaries(watershed_lines(probability, 0.2, min_seed_size=1)).max() == 2
    assert not watershed_lines(probability, 0.2, min_seed_size=5).any()


def test_logits_get_certain_membrane_on_the_lines_only() -> None:
    probability = torch.as_tensor(two_cells_with_a_gap(), dtype=torch.float32)
    logits = torch.stack([torch.zeros_like(probability), torch.logit(probability)])  # softmax[1] = probability
    out = WatershedLines(boundary_class=1, seed_threshold=0.2, min_seed_size=1)(logits)
    lines = torch.as_tensor(watershed_lines(probability.numpy(), 0.2, 1))
    assert torch.equal(torch.softmax(out, 0)[1][lines], torch.ones(int(lines.sum())))
    assert torch.equal(out[:, ~lines], logits[:, ~lines]) and torch.equal(out[0], logits[0])
    assert cells_from_boundaries((out.argmax(0) == 1).numpy()).max() == 2
    d = WatershedLinesd("pred", boundary_class=1, seed_threshold=0.2, min_seed_size=1)({"pred": logits, "x": 1})
    assert torch.equal(d["pred"], out) and d["x"] == 1


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: watershed_lines(np.zeros(5)), r"must be \(H, W\) or \(H, W, D\), got shape \(5,\)"),
        (lambda: watershed_lines(np.zeros((4, 4)), seed_threshold=0.0), r"seed_threshold must be in \(0, 1\]"),
        (lambda: watershed_lines(np.zeros((4, 4)), min_seed_size=0), r"min_seed_size must be >= 1"),
        (lambda: WatershedLines()(torch.zeros(1, 4, 4)), r"C > 1, got torch.float32 of shape \(1, 4, 4\)"),
        (lambda: WatershedLines(boundary_class=2)(torch.zeros(2, 4, 4)), r"boundary_class 2 is not a channel"),
    ],
)
def test_bad_inputs_are_refused(call, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.skipif(not SHARED_ISBI.is_dir(), reason=f"shared ISBI 2012 data not found at {SHARED_ISBI}")
def test_lines_undo_gaps_punched_into_a_real_membrane_map() -> None:
    """An ISBI 2012 label, blurred into a probability map with holes punched into its membranes: the leaderboard's
    Rand error falls with the lines burnt in, the pixel error hardly moves."""
    with Image.open(SHARED_ISBI / "train" / "label" / "0.png") as image:
        membrane = np.asarray(image) == 0
    probability = ndimage.gaussian_filter(membrane.astype(np.float64), 1.0)
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, membrane.shape[0], size=(400, 2)):
        probability[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] *= 0.3  # gaps of about 5 pixels
    plain = challenge_scores([threshold_sweep(probability, membrane)])
    burnt = np.maximum(probability, watershed_lines(probability))
    with_lines = challenge_scores([threshold_sweep(burnt, membrane)])
    assert with_lines["rand_error"] < 0.5 * plain["rand_error"]
    assert with_lines["pixel_error"] < plain["pixel_error"] + 0.01
