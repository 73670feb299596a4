"""Metrics of §2.2 against plain NumPy and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from simflib.functional.metrics import all_steps_mse, final_step_spearman


def test_all_steps_mse_excludes_step_zero_and_averages_steps_and_examples():
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    true[0] = pred[0] + 100.0  # step 0 must not count
    expected = sum((pred[t, j] - true[t, j]) ** 2 for t in range(1, 9) for j in range(5)) / 40
    assert all_steps_mse(pred, true) == pytest.approx(expected, rel=1e-12)


def test_metrics_vectorize_over_runs():
    rng = np.random.default_rng(1)
    pred, true = rng.normal(size=(4, 9, 6)), rng.normal(size=(4, 9, 6))
    mse, rho = all_steps_mse(pred, true), final_step_spearman(pred, true)
    assert mse.shape == rho.shape == (4,)
    for k in range(4):
        assert mse[k] == pytest.approx(all_steps_mse(pred[k], true[k]))
        assert rho[k] == pytest.approx(spearmanr(pred[k, -1], true[k, -1]).statistic, abs=1e-12)


def test_spearman_with_ties_matches_scipy_and_constant_is_nan():
    pred = np.array([[0, 0, 0, 0, 0], [1, 2, 2, 3, 1]], dtype=float)
    true = np.array([[0, 0, 0, 0, 0], [5, 1, 4, 4, 2]], dtype=float)
    assert final_step_spearman(pred, true) == pytest.approx(spearmanr(pred[-1], true[-1]).statistic, abs=1e-12)
    assert np.isnan(final_step_spearman(np.ones((3, 4)), true[:, :4].repeat(1, 0)[[0, 1, 1]]))


def test_metric_input_errors():
    with pytest.raises(ValueError, match="shape"):
        all_steps_mse(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="pred: non-finite value nan at step 1, test example 0"):
        all_steps_mse(np.array([[0.0], [np.nan]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="at least 2 test examples"):
        final_step_spearman(np.zeros((3, 1)), np.zeros((3, 1)))
