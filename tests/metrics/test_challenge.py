"""The ISBI 2012 leaderboard's best-threshold scores, against direct computations of their definitions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from unet_monai.handlers import CaseMetricsReport
from unet_monai.metrics import CHALLENGE_THRESHOLDS, challenge_scores, foreground_restricted_scores, threshold_sweep
from unet_monai.metrics.rand_info import cells_from_boundaries, thin_boundaries


def membrane_grid(size: int = 48, spacing: int = 12) -> np.ndarray:
    """True membranes: a grid of 2-pixel lines, so that the cells are squares."""
    boundary = np.zeros((size, size), dtype=bool)
    for start in range(0, size, spacing):
        boundary[start : start + 2, :] = True
        boundary[:, start : start + 2] = True
    return boundary


def test_perfect_probabilities_score_zero_errors() -> None:
    truth = membrane_grid()
    sweep = threshold_sweep(truth.astype(float), truth)
    scores = challenge_scores([sweep])
    assert scores["pixel_error"] == 0.0 and scores["rand_error"] == pytest.approx(0.0, abs=1e-12)
    assert sweep["false_positives"][-1] == 0 and sweep["true_positives"][-1] == 0  # threshold 1.0: no cell at all


def test_fscore_from_counts_summed_over_sections_at_the_best_threshold() -> None:
    rng = np.random.default_rng(0)
    truths = [membrane_grid(), np.roll(membrane_grid(), 5, axis=1)]
    probabilities = [t * 0.4 + rng.random(t.shape) * 0.6 for t in truths]  # classes overlap: no perfect threshold
    sweeps = [threshold_sweep(p, t) for p, t in zip(probabilities, truths)]
    scores = challenge_scores(sweeps)
    best_f, best_rand, best_thinned = -1.0, -1.0, -1.0
    for threshold in CHALLENGE_THRESHOLDS:
        tp = fp = fn = 0
        v_rand, v_thinned = [], []
        for p, t in zip(probabilities, truths):
            cell = (1 - p) > threshold
            tp += np.sum(cell & ~t)
            fp += np.sum(cell & t)
            fn += np.sum(~cell & ~t)
            v_rand.append(
                foreground_restricted_scores(cells_from_boundaries(~cell), cells_from_boundaries(t))["v_rand"]
            )
            thinned = thin_boundaries(cells_from_boundaries(~cell))
            v_thinned.append(foreground_restricted_scores(thinned, cells_from_boundaries(t))["v_rand"])
        f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        if f > best_f:
            best_f, best_threshold = f, threshold
        best_rand = max(best_rand, float(np.mean(v_rand)))
        best_thinned = max(best_thinned, float(np.mean(v_thinned)))
    assert scores["pixel_error"] == pytest.approx(1 - best_f)
    assert scores["pixel_threshold"] == best_threshold
    assert scores["rand_error"] == pytest.approx(1 - best_rand)
    assert scores["rand_error_thinned"] == pytest.approx(1 - best_thinned)
    assert scores["rand_error_thinned"] <= scores["rand_error"] + 1e-12
    # the leaderboard's pixel error (an F-score of cell pixels) is smaller than the misclassified fraction
    assert scores["pixel_error"] < scores["misclassified_at_pixel_threshold"]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differs"):
        threshold_sweep(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="at least one"):
        challenge_scores([])
    a = threshold_sweep(np.zeros((4, 4)), np.zeros((4, 4), bool))
    b = threshold_sweep(np.zeros((4, 4)), np.zeros((4, 4), bool), thresholds=(0.5,))
    with pytest.raises(ValueError, match="same thresholds"):
        challenge_scores([a, b])


def test_case_report_sweeps_logits_and_writes_the_leaderboard_scores(tmp_path: Path) -> None:
    truth = membrane_grid()
    label = MetaTensor(torch.from_numpy(truth.astype(np.float32))[None], affine=torch.eye(4))
    logits = MetaTensor(torch.from_numpy(np.stack([~truth, truth]).astype(np.float32) * 4 - 2), affine=torch.eye(4))

    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        return [{"pred": logits, "label": label}]

    evaluator = Engine(step)
    CaseMetricsReport(tmp_path, classes={1: "membrane"}, boundary_class=1, prefix="e_").attach(evaluator)
    evaluator.run([[{"case_id": "grid"}]], max_epochs=1)
    summary = json.loads((tmp_path / "e_summary.json").read_text())
    assert summary["challenge"]["pixel_error"] == 0.0
    assert summary["challenge"]["rand_error_thinned"] == pytest.approx(0.0, abs=1e-12)
    assert summary["metrics"]["dice_membrane"]["mean"] == 1.0  # labels are the logits' argmax
    with open(tmp_path / "e_thresholds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["cell_threshold"] for r in rows] == [f"{t:.1f}" for t in CHALLENGE_THRESHOLDS]
    assert {r["case"] for r in rows} == {"grid"} and "v_rand_thinned" in rows[0]
    with pytest.raises(ValueError, match="not a channel"):
        bad = Engine(step)
        CaseMetricsReport(tmp_path, classes={1: "membrane"}, boundary_class=2).attach(bad)
        bad.run([[{"case_id": "grid"}]], max_epochs=1)
