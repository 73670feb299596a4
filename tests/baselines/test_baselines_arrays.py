"""The §4 equivalences on arrays: TracIn-Ideal = Additive B (Eq. 6), TracIn-CP = Hypothetical Additive (Eq. 11)."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import Run, RunSet, SimfluenceAdditive, SimfluenceLinear
from simflib.baselines import (
    HypotheticalSums,
    fit_hypothetical,
    hypothetical_observations,
    tracin_cp,
    tracin_ideal,
)
from simflib.functional import optimal_rescaling
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
    # Eq. 10: hypothetical Simfluence-Linear. Each observation (z_i at checkpoint c) says L_c - R_c[i] follows
    # A_i L_c + B_i, a 2-parameter ridge regression per (i, j) over the C checkpoints: solve it directly.
    l2 = 1e-3
    hypo = SimfluenceLinear(n, l2=l2, tol=1e-14).fit(hypothetical_observations(loss, reduction))
    for i, j in ((0, 0), (4, 2), (8, 1)):
        x = np.stack([loss[:, j], np.ones(C)], axis=1)
        y = loss[:, j] - reduction[:, i, j]
        a, b = np.linalg.solve(x.T @ x + l2 * np.eye(2), x.T @ y)
        assert hypo.A[j, i] == pytest.approx(a, abs=1e-9) and hypo.B[j, i] == pytest.approx(b, abs=1e-9)


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


def _hypothetical(rng, C=6, n=5, m=4):
    loss = rng.uniform(0.4, 1.2, (C, m))
    reduction = rng.normal(0, 0.05, (C, n, m))
    return loss, reduction


@pytest.mark.parametrize("variant", ["linear", "additive", "multiplicative"])
@pytest.mark.parametrize("l2", [0.0, 1e-3, 0.5])
def test_closed_form_from_sums_equals_the_general_solver(variant, l2):
    loss, reduction = _hypothetical(np.random.default_rng(3))
    dense = fit_linear(hypothetical_observations(loss, reduction), l2=l2, variant=variant, tol=1e-14)
    fast = fit_hypothetical(HypotheticalSums.from_arrays(loss, reduction), l2=l2, variant=variant)
    for name in ("A", "B"):
        want, got = getattr(dense, name), getattr(fast, name)
        assert (want is None) == (got is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_tracin_cp_scores_are_minus_count_times_hypothetical_additive_b():
    loss, reduction = _hypothetical(np.random.default_rng(4))
    fit = fit_hypothetical(HypotheticalSums.from_arrays(loss, reduction), l2=0.0, variant="additive")
    brute = np.zeros((4, 5))
    for c in range(6):
        for i in range(5):
            brute[:, i] += reduction[c, i]
    np.testing.assert_allclose(tracin_cp(reduction), brute, atol=1e-14)
    np.testing.assert_allclose(fit.B, -tracin_cp(reduction) / 6, rtol=0, atol=1e-12)


def test_sums_over_disjoint_checkpoints_add_and_survive_a_round_trip(tmp_path):
    loss, reduction = _hypothetical(np.random.default_rng(5))
    whole = HypotheticalSums.from_arrays(loss, reduction)
    parts = HypotheticalSums.from_arrays(loss[:2], reduction[:2]) + HypotheticalSums.from_arrays(loss[2:], reduction[2:])
    loaded = HypotheticalSums.load(whole.save(tmp_path / "sums.npz"))
    for other in (parts, loaded):
        assert other.count == whole.count
        for key in ("loss", "loss_sq", "reduction", "loss_reduction"):
            np.testing.assert_allclose(getattr(other, key), getattr(whole, key), atol=1e-12)
    # A simulator fits to sums directly, to the same parameters as the dense fit of the observations behind them.
    sim = SimfluenceLinear(5, l2=1e-3, tol=1e-14).fit(loaded)
    dense = fit_linear(hypothetical_observations(loss, reduction), l2=1e-3, variant="linear", tol=1e-14)
    np.testing.assert_allclose(sim.A, dense.A, rtol=0, atol=1e-9)
    np.testing.assert_allclose(sim.B, dense.B, rtol=0, atol=1e-9)


def test_sums_reject_bad_files_and_singular_fits(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, count=np.array(2), loss=np.ones(3))
    with pytest.raises(ValueError, match="bad.npz: not a simflib file"):
        HypotheticalSums.load(bad)
    good = HypotheticalSums.from_arrays(*_hypothetical(np.random.default_rng(5))).save(tmp_path / "good.npz")
    from simflib.storage import read_archive, write_archive

    header, arrays = read_archive(good, fmt="simflib.hypothetical_sums", versions=(1,))
    header = {k: v for k, v in header.items() if k not in ("sha256", "covers")}
    write_archive(tmp_path / "short.npz", {**arrays, "loss": arrays["loss"][:-1]}, header)
    with pytest.raises(ValueError, match="short.npz: field 'loss' has shape"):
        HypotheticalSums.load(tmp_path / "short.npz")
    loss, reduction = _hypothetical(np.random.default_rng(6), C=1)
    with pytest.raises(ValueError, match="not determined"):
        fit_hypothetical(HypotheticalSums.from_arrays(loss, reduction), l2=0.0, variant="linear")
    with pytest.raises(ValueError, match="sums are over n_train=5"):
        SimfluenceLinear(7).fit(HypotheticalSums.from_arrays(*_hypothetical(np.random.default_rng(7))))


@pytest.mark.parametrize("variant", ["linear", "additive", "multiplicative"])
def test_batch_share_fit_against_per_pair_least_squares(variant):
    # With batch size b, a hypothetical step on z_i is its share of a batch whose b - 1 other examples are
    # neutral (A = 1/b, B = 0): the linear model predicts (A_i + (b-1)/b) L + B_i for the loss after it.
    b, l2 = 4, 1e-2
    loss, reduction = _hypothetical(np.random.default_rng(8))
    fit = fit_hypothetical(HypotheticalSums.from_arrays(loss, reduction, batch_size=b), l2=l2, variant=variant)
    C, n, m = reduction.shape
    for i in range(n):
        for j in range(m):
            before, after = loss[:, j], loss[:, j] - reduction[:, i, j]
            if variant == "additive":
                X, y = np.ones((C, 1)), after - before
            else:
                shifted = after - (b - 1) / b * before
                X = np.c_[before, np.ones(C)] if variant == "linear" else before[:, None]
                y = shifted
            coef = np.linalg.solve(X.T @ X + l2 * np.eye(X.shape[1]), X.T @ y)
            if variant == "additive":
                assert fit.B[j, i] == pytest.approx(coef[0], abs=1e-12)
            else:
                assert fit.A[j, i] == pytest.approx(coef[0], abs=1e-12)
                if variant == "linear":
                    assert fit.B[j, i] == pytest.approx(coef[1], abs=1e-12)
    with pytest.raises(ValueError, match="batch size 4 and"):
        HypotheticalSums.from_arrays(loss, reduction, batch_size=4) + HypotheticalSums.from_arrays(loss, reduction)
