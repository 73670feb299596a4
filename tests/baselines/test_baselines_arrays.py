"""The §4 equivalences on arrays: TracIn-Ideal = Additive B (Eq. 6), TracIn-CP = Hypothetical Additive (Eq. 11)."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import Run, RunSet, SimfluenceAdditive, SimfluenceLinear
from simflib.baselines import hypothetical_observations, optimal_rescaling, tracin_ideal
from simflib.functional.linear import fit_linear


def _random_walk_runs(rng, *, n=7, m=4, runs=6, T=30, b=1) -> RunSet:
    out = []
    for _ in range(runs):
        curr = rng.integers(0, n, (T, b))
        losses = np.cumsum(rng.normal(0, 0.05, (T + 1, m)), axis=0) + 1.0
        out.append(Run(curr, losses))
    return RunSet(out, n)


def test_tracin_ideal_brute_force_and_expected():
    rng = np.random.default_rng(0)
    runs = _random_walk_runs(rng, b=3)
    scores = tracin_ideal(runs)
    brute = np.zeros((4, 7))
    for run in runs:
        for t in range(run.n_steps):
            for i in run.curriculum[t]:
                brute[:, i] += (run.losses[t] - run.losses[t + 1]) / 3
    np.testing.assert_allclose(scores, brute, atol=1e-12)
    np.testing.assert_allclose(tracin_ideal(runs, expected=True), brute / len(runs), atol=1e-12)


def test_tracin_ideal_is_additive_b_times_count_at_batch_one():
    # Eq. 6: with batch size 1 and lambda = 0, B_i = -(TracIn-Ideal_i) / |T_i|.
    rng = np.random.default_rng(1)
    runs = _random_walk_runs(rng)
    additive = SimfluenceAdditive(7, l2=0.0).fit(runs)
    counts = additive.counts
    np.testing.assert_allclose(additive.B, -tracin_ideal(runs) / counts, rtol=0, atol=1e-10)


def test_tracin_cp_is_hypothetical_additive():
    rng = np.random.default_rng(2)
    C, n, m = 5, 9, 3
    eta = rng.uniform(1e-3, 1e-2, C)
    g_train, g_test = rng.normal(size=(C, n, 16)), rng.normal(size=(C, m, 16))
    reduction = eta[:, None, None] * np.einsum("cnd,cmd->cnm", g_train, g_test)  # eta_c g_i . g_z (Eq. 7)
    tracin_cp = reduction.sum(axis=0).T  # Eq. 8: (m, n)
    loss = rng.uniform(0.5, 1.0, (C, m))
    fit = fit_linear(hypothetical_observations(loss, reduction), l2=0.0, variant="additive")
    np.testing.assert_allclose(fit.B, -tracin_cp / C, rtol=0, atol=1e-12)  # Eq. 11
    hypo = SimfluenceLinear(n, l2=1e-3).fit(hypothetical_observations(loss, reduction))  # Eq. 10 runs too
    assert hypo.A.shape == (m, n)


def test_hypothetical_observations_checks_shapes_and_values():
    with pytest.raises(ValueError, match=r"shape \(C, n, m\)"):
        hypothetical_observations(np.ones((2, 3)), np.ones((2, 4, 5)))
    bad = np.ones((2, 4, 3))
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="checkpoint 1, training example 2, test example 0"):
        hypothetical_observations(np.ones((2, 3)), bad)


def test_optimal_rescaling_is_least_squares():
    rng = np.random.default_rng(3)
    pred, true = rng.uniform(0.5, 1, (2, 11, 4)), rng.uniform(0.5, 1, (2, 11, 4))
    sigma, scaled = optimal_rescaling(pred, true)
    for r in range(2):
        for j in range(4):
            s, *_ = np.linalg.lstsq(pred[r, 1:, j, None], true[r, 1:, j], rcond=None)
            assert sigma[r, j] == pytest.approx(s[0], rel=1e-12)
    np.testing.assert_allclose(scaled[:, 1:], pred[:, 1:] * sigma[:, None, :])
    np.testing.assert_array_equal(scaled[:, 0], pred[:, 0])
