"""Metrics of §2.2 against plain NumPy and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from simflib.functional.metrics import (
    all_steps_lds,
    all_steps_mse,
    final_step_lds,
    final_step_spearman,
    lds_per_example,
    mse_decomposition,
    mse_improvement,
)


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


def _brute_lds(pred, true, step):
    """Mean over test examples of scipy's Spearman across runs, skipping constant columns (a loop, no vectors)."""
    values, skipped = [], 0
    for j in range(pred.shape[2]):
        p, t = pred[:, step, j], true[:, step, j]
        if np.all(p == p[0]) or np.all(t == t[0]):
            skipped += 1
            continue
        values.append(spearmanr(p, t).statistic)
    return (float(np.mean(values)) if values else float("nan")), skipped


def _lds_case(seed=0):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(7, 5, 6)).round(1)  # rounding makes ties across runs
    true = pred + rng.normal(scale=0.5, size=pred.shape).round(1)
    pred[:, :, 2] = 3.0  # a test example the simulator predicts constant across runs
    true[:, -1, 4] = 1.0  # one whose observed final loss is the same in every run
    pred[:, 3, :] = 0.0  # a step at which everything is constant
    return pred, true


def test_final_step_lds_matches_a_scipy_loop_with_ties_and_constant_columns():
    pred, true = _lds_case()
    expected, skipped = _brute_lds(pred, true, -1)
    result = final_step_lds(pred, true)
    assert result.score == pytest.approx(expected, abs=1e-12)
    assert (result.skipped, result.total) == (skipped, 6) == (2, 6)
    rho = lds_per_example(pred, true)
    assert np.isnan(rho[[2, 4]]).all() and not np.isnan(np.delete(rho, [2, 4])).any()


def test_all_steps_lds_averages_the_per_step_scores_over_steps_with_any_defined():
    pred, true = _lds_case(1)
    per_step = [_brute_lds(pred, true, t) for t in range(1, 5)]
    defined = [score for score, _ in per_step if not np.isnan(score)]
    result = all_steps_lds(pred, true)
    assert len(defined) == 3  # step 3 is constant everywhere
    assert result.score == pytest.approx(np.mean(defined), abs=1e-12)
    assert result.skipped == sum(s for _, s in per_step) and result.total == 4 * 6


def test_lds_is_one_for_any_increasing_transform_and_minus_one_reversed():
    rng = np.random.default_rng(2)
    true = rng.normal(size=(9, 3, 4))
    assert final_step_lds(np.exp(true), true).score == pytest.approx(1.0)
    assert final_step_lds(-true, true).score == pytest.approx(-1.0)
    assert np.isnan(final_step_lds(np.zeros_like(true), true).score)


def test_lds_input_errors():
    with pytest.raises(ValueError, match="at least 2 runs"):
        final_step_lds(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"\(R, T \+ 1, m\)"):
        final_step_lds(np.zeros((3, 2)), np.zeros((3, 2)))


def test_mse_improvement():
    assert mse_improvement(0.25, 1.0) == 0.75
    np.testing.assert_array_equal(mse_improvement([1.0, 3.0], 2.0), [0.5, -0.5])
    with pytest.raises(ValueError, match="positive"):
        mse_improvement(1.0, 0.0)


def test_mse_decomposition_adds_up_and_matches_its_definition_in_loops():
    rng = np.random.default_rng(3)
    pred, true = rng.normal(size=(5, 4, 3)), rng.normal(size=(5, 4, 3))
    shared, specific = mse_decomposition(pred, true)
    assert shared + specific == pytest.approx(np.mean(all_steps_mse(pred, true)), rel=1e-12)
    brute_shared = np.mean([(pred[:, t, j].mean() - true[:, t, j].mean()) ** 2 for t in range(1, 4) for j in range(3)])
    assert shared == pytest.approx(brute_shared, rel=1e-12)
    # A prediction that is the same in every run has, as its specific part, the observed spread across runs.
    blind = np.repeat(pred[:1], 5, axis=0)
    assert mse_decomposition(blind, true)[1] == pytest.approx(np.mean(true[:, 1:].var(axis=0)), rel=1e-12)


def test_values_equal_to_rounding_count_as_constant_in_the_lds():
    """Found on the committed runs: initial losses recorded on a GPU and a CPU differ by ~2e-7 (on two CPU machines
    by up to 1.6e-6 relative), and a prediction shifted to them ranked the runs by that noise (a curriculum-blind LDS
    of 0.08 instead of undefined)."""
    rng = np.random.default_rng(4)
    true = rng.uniform(0.5, 2.0, size=(10, 3, 4))
    pred = np.full_like(true, 0.7) + rng.normal(scale=1e-8, size=true.shape)
    assert np.isnan(final_step_lds(pred, true).score) and final_step_lds(pred, true).skipped == 4
    assert not np.isnan(final_step_lds(pred, true, rtol=0.0).score)  # the exact rule ranks the noise
    pred[:, :, 0] += np.linspace(0, 1e-3, 10)[:, None]  # a real (small) difference still counts
    assert final_step_lds(pred, true).skipped == 3
    # Two CPU machines (same library versions) gave initial losses differing by up to 1.6e-6 of their value.
    cpus = 0.7 * (1 + rng.uniform(-1.6e-6, 1.6e-6, size=true.shape))
    assert final_step_lds(cpus, true).skipped == 4


def test_step_scale_is_the_ratio_of_mean_absolute_steps():
    from simflib.functional import step_scale

    rng = np.random.default_rng(0)
    true = rng.normal(size=(3, 6, 4))
    pred = 2.5 * true + 1.0  # every step 2.5 times as large; the offset does not move a step
    assert step_scale(pred, true) == pytest.approx(2.5, rel=1e-12)
    flat_sim = sum(abs(pred[r, t, j] - pred[r, t - 1, j]) for r in range(3) for t in range(1, 6) for j in range(4))
    flat_obs = sum(abs(true[r, t, j] - true[r, t - 1, j]) for r in range(3) for t in range(1, 6) for j in range(4))
    noisy = pred + rng.normal(size=pred.shape)
    flat_noisy = sum(abs(noisy[r, t, j] - noisy[r, t - 1, j]) for r in range(3) for t in range(1, 6) for j in range(4))
    assert step_scale(noisy, true) == pytest.approx(flat_noisy / flat_obs, rel=1e-12)
    assert flat_sim / flat_obs == pytest.approx(2.5, rel=1e-12)
    with pytest.raises(ValueError, match="never change"):
        step_scale(pred, np.ones_like(true))
