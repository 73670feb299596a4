"""Time effects, the momentum kernel and the gradient prior: the exact fit against a dense least-squares solve."""

from __future__ import annotations

import numpy as np
import pytest

from simflib.functional.dynamics import EPS, fit_dynamics, momentum_counts, simulate_dynamics


def _runs(seed=0, R=6, T=9, b=3, n=7, m=4):
    rng = np.random.default_rng(seed)
    curricula = [np.stack([rng.choice(n, b, replace=False) for _ in range(T)]) for _ in range(R)]
    curricula[0][2, 1] = -1  # a padded slot
    losses = [np.cumsum(rng.normal(0, 0.1, (T + 1, m)), axis=0) + 2 for _ in range(R)]
    return curricula, losses, n, m


def test_momentum_counts_follow_adams_first_moment_recursion():
    curricula, _, n, _ = _runs()
    c = curricula[0]
    for kappa in (0.0, 0.5, 0.9):
        m_t, expected = np.zeros(n), []
        for t, row in enumerate(c, start=1):
            x = np.zeros(n)
            for i in row:
                if i >= 0:
                    x[i] += 1
            m_t = kappa * m_t + (1 - kappa) * x
            expected.append(m_t / (1 - kappa**t))
        np.testing.assert_allclose(momentum_counts(c, n, momentum=kappa), np.array(expected), rtol=1e-12, atol=1e-15)
    stacked = momentum_counts(np.stack(curricula[:2]), n, momentum=0.8)
    np.testing.assert_allclose(stacked[1], momentum_counts(curricula[1], n, momentum=0.8))
    with pytest.raises(ValueError, match="momentum"):
        momentum_counts(c, n, momentum=1.0)


@pytest.mark.parametrize("with_prior", [False, True])
def test_fit_equals_dense_ridge_per_test_example(with_prior):
    curricula, losses, n, m = _runs()
    rng = np.random.default_rng(5)
    prior = rng.normal(size=(n, m)) if with_prior else None
    kappa, l2 = 0.7, 0.03
    fit = fit_dynamics(curricula, losses, n, momentum=kappa, l2=l2, prior=prior)
    T = curricula[0].shape[0]
    M = np.concatenate([momentum_counts(c, n, momentum=kappa) for c in curricula])
    Y = np.concatenate([np.diff(x, axis=0) for x in losses])
    S = len(Y)
    E = np.tile(np.eye(T), (len(curricula), 1))
    for j in range(m):
        cols = [E] + ([(M @ prior[:, j])[:, None]] if with_prior else []) + [M]
        X = np.hstack(cols)
        pen = np.r_[np.full(T, EPS), [EPS] if with_prior else [], np.full(n, l2)]
        # min (1/S)||y - X w||^2 + sum pen w^2  <=>  least squares on the augmented system
        A = np.vstack([X / np.sqrt(S), np.diag(np.sqrt(pen))])
        y = np.r_[Y[:, j] / np.sqrt(S), np.zeros(len(pen))]
        w = np.linalg.lstsq(A, y, rcond=None)[0]
        np.testing.assert_allclose(fit.steps[:, j], w[:T], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(fit.B[j], w[-n:], rtol=1e-7, atol=1e-9)
        if with_prior:
            assert fit.scale[j] == pytest.approx(w[T], rel=1e-7, abs=1e-9)
    assert (fit.scale == 0).all() if not with_prior else True


def test_simulate_is_the_cumulative_sum_of_the_one_step_model():
    curricula, losses, n, m = _runs()
    rng = np.random.default_rng(1)
    steps, scale, B, P = rng.normal(size=(9, m)), rng.normal(size=m), rng.normal(size=(m, n)), rng.normal(size=(n, m))
    c, L0 = curricula[1], losses[1][0]
    out = simulate_dynamics(c, L0, steps=steps, scale=scale, B=B, momentum=0.5, prior=P)
    M = momentum_counts(c, n, momentum=0.5)
    L = [L0]
    for t in range(len(c)):
        L.append(L[-1] + steps[t] + M[t] @ B.T + scale * (M[t] @ P))
    np.testing.assert_allclose(out, np.array(L), rtol=1e-12)
    # Longer than fitted: steps beyond the fitted time effects add no shared change.
    longer = np.concatenate([c, c[:3]])
    out2 = simulate_dynamics(longer, L0, steps=steps, scale=scale, B=B, momentum=0.5, prior=P)
    np.testing.assert_allclose(out2[: len(c) + 1], out)
    stacked = simulate_dynamics(np.stack([c, c]), np.stack([L0, L0]), steps=steps, scale=scale, B=B, momentum=0.5)
    assert stacked.shape == (2, len(c) + 1, m)


def test_planted_parameters_are_recovered_without_noise():
    rng = np.random.default_rng(3)
    n, m, T, b, R = 6, 3, 8, 2, 40
    steps, B = rng.normal(0, 0.1, (T, m)), rng.normal(0, 0.1, (m, n))
    P = rng.normal(size=(n, m))
    scale = np.array([0.05, -0.02, 0.0])
    curricula = [np.stack([rng.choice(n, b, replace=False) for _ in range(T)]) for _ in range(R)]
    losses = [simulate_dynamics(c, np.ones(m), steps=steps, scale=scale, B=B, momentum=0.6, prior=P) for c in curricula]
    fit = fit_dynamics(curricula, losses, n, momentum=0.6, l2=0.0, prior=P)
    # The prior's column lies in the span of M, so B and the scale are confounded at l2 = 0: compare predictions.
    pred = [simulate_dynamics(c, np.ones(m), steps=fit.steps, scale=fit.scale, B=fit.B, momentum=0.6, prior=P)
            for c in curricula]
    np.testing.assert_allclose(np.array(pred), np.array(losses), atol=1e-6)


def test_bad_inputs_name_the_problem():
    curricula, losses, n, m = _runs()
    with pytest.raises(ValueError, match="prior must have shape"):
        fit_dynamics(curricula, losses, n, momentum=0.5, l2=0.1, prior=np.ones((n, m + 1)))
    with pytest.raises(ValueError, match="non-finite"):
        fit_dynamics(curricula, losses, n, momentum=0.5, l2=0.1, prior=np.full((n, m), np.nan))
    with pytest.raises(ValueError, match="run 1"):
        fit_dynamics(curricula, [losses[0], losses[1][:-1]] + losses[2:], n, momentum=0.5, l2=0.1)
    with pytest.raises(ValueError, match="l2"):
        fit_dynamics(curricula, losses, n, momentum=0.5, l2=-1)
    unseen = [np.where(c == n - 1, 0, c) for c in curricula]  # example n - 1 never trains
    with pytest.raises(ValueError, match="use l2 > 0"):
        fit_dynamics(unseen, losses, n, momentum=0.0, l2=0.0)
