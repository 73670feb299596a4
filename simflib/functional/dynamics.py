"""Time effects, an optimizer-momentum kernel and a gradient prior: the additive simulator of :mod:`simflib.simulators.dynamics` as pure functions.

Simfluence-Linear explains every change of a test loss by the batch of that step. On real fine-tuning runs most of
the change is shared by all runs (the loss falls, or a classifier swings between labels, whatever the curriculum),
AdamW carries a batch's gradient into the following steps through its first moment, and 20 runs are too few to
learn n influences per test example from scratch. The model here addresses the three in turn. For test example j,

    L_t(z_j) - L_{t-1}(z_j) = gamma_t[j] + sum_i M_t[i] * (c[j] * P[i, j] + B[j, i]),

* ``gamma_t[j]``: a *time effect* per step and test example, the change every run shares at step t;
* ``M_t[i]``: the *momentum-filtered count* of training example i at step t, Adam's bias-corrected first-moment
  filter ``m_t = kappa m_{t-1} + (1 - kappa) x_t``, ``M_t = m_t / (1 - kappa^t)`` applied to the batch counts
  ``x_t`` (kappa = 0 gives the counts themselves, Simfluence's one-step attribution);
* ``P[i, j]``: a *prior* influence of training example i on test example j known before any run is fitted, such as
  the gradient products of :mod:`simflib.features` (first-order TracIn at the initial model), with one learned
  scale ``c[j]`` per test example;
* ``B[j, i]``: the additive influence the runs add to the prior, ridge-penalised towards zero (towards the prior).

All unknowns enter linearly, so the fit is exact least squares: the design ``[steps, M]`` is shared by every test
example and is factored once; the prior adds one column per test example, eliminated by a Schur complement. The
objective is the *mean* squared one-step error over the S observed steps plus ``l2 * ||B[j]||^2`` (and a
vanishing ``EPS`` on the time effects and scale, which keeps the solve well posed), so ``l2`` does not depend on
the number of runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_curriculum, as_losses, pad_batches
from simflib.functional.linear import observation_counts

EPS = 1e-8
"""Ridge on the time effects and the prior's scale, relative to the mean squared error: numerically zero."""


def momentum_counts(curriculum: ArrayLike, n_train: int, *, momentum: float) -> NDArray[np.float64]:
    """Batch counts passed through Adam's bias-corrected first-moment filter.

    Args:
        curriculum: (T, b) or (K, T, b) training-example indices, ``-1`` padding.
        n_train: Pool size n.
        momentum: kappa in [0, 1) (AdamW's beta_1 is 0.9); 0 returns the counts.

    Returns:
        The filtered counts, (T, n) or (K, T, n), ``M_t = m_t / (1 - kappa^t)`` with
        ``m_t = kappa m_{t-1} + (1 - kappa) x_t`` and ``x_t[i]`` the number of times example i is in step t's batch.
    """
    if not (np.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    curr = as_curriculum(curriculum, n_train=n_train)
    lead = curr.shape[:-2]
    flat = curr.reshape(-1, *curr.shape[-2:])
    K, T, _ = flat.shape
    counts = np.zeros((K, T, n_train))
    k_idx, t_idx, _ = np.nonzero(flat != PAD)
    np.add.at(counts, (k_idx, t_idx, flat[flat != PAD]), 1.0)
    if momentum == 0:
        return counts.reshape(*lead, T, n_train)
    out = np.empty_like(counts)
    state = np.zeros((K, n_train))
    for t in range(T):
        state = momentum * state + (1 - momentum) * counts[:, t]
        out[:, t] = state / (1 - momentum ** (t + 1))
    return out.reshape(*lead, T, n_train)


@dataclass(frozen=True)
class DynamicsFit:
    """Fitted parameters of the model in the module docstring.

    Attributes:
        steps: (T, m) time effects gamma_t (T the longest fitted run).
        scale: (m,) scale c of the prior for each test example (zeros without a prior).
        B: (m, n) additive influence on top of the prior.
        counts: (n,) fitted steps whose batch contains each training example.
        momentum: The kernel's kappa.
        l2: The ridge penalty on B.
    """

    steps: NDArray[np.float64]
    scale: NDArray[np.float64]
    B: NDArray[np.float64]
    counts: NDArray[np.int64]
    momentum: float
    l2: float


@dataclass(frozen=True)
class DynamicsSystem:
    """The normal equations of the model for fixed momentum and prior, before the penalty on B is chosen.

    Built once by :func:`dynamics_system` and solved for any ``l2`` by :func:`solve_dynamics`, so choosing the
    penalty costs one Cholesky factorization per candidate, not one pass over the runs.

    Attributes:
        gram: (T + n, T + n) ``Z^T Z / S`` of the shared design Z = [step indicators, M].
        zy: (T + n, m) ``Z^T Y / S``.
        zu: (T + n, m) ``Z^T U / S`` with ``U = M P`` the prior's predicted changes (None without a prior).
        uu: (m,) ``sum_s U[s, j]^2 / S``.
        uy: (m,) ``sum_s U[s, j] Y[s, j] / S``.
        n_steps: T, the longest run.
        counts: (n,) fitted steps whose batch contains each training example.
        momentum: The kernel's kappa.
    """

    gram: NDArray[np.float64]
    zy: NDArray[np.float64]
    zu: NDArray[np.float64] | None
    uu: NDArray[np.float64] | None
    uy: NDArray[np.float64] | None
    n_steps: int
    counts: NDArray[np.int64]
    momentum: float


def dynamics_system(
    curricula: Sequence[ArrayLike],
    losses: Sequence[ArrayLike],
    n_train: int,
    *,
    momentum: float,
    prior: ArrayLike | None = None,
) -> DynamicsSystem:
    """The normal equations of one-step loss changes (module docstring) over some runs.

    Args:
        curricula: R curricula, each (T_r, b).
        losses: R loss trajectories, each (T_r + 1, m).
        n_train: Pool size n.
        momentum: kappa of :func:`momentum_counts`.
        prior: (n, m) prior influence P, or None.
    """
    if len(curricula) != len(losses) or not curricula:
        raise ValueError(
            f"fit_dynamics: need as many curricula as loss trajectories (>= 1), got {len(curricula)} and {len(losses)}"
        )
    filtered, changes, step_of = [], [], []
    m = None
    for r, (curr, loss) in enumerate(zip(curricula, losses)):
        L = as_losses(loss, where=f"run {r}: losses")
        c = as_curriculum(curr, n_train=n_train, where=f"run {r}: curriculum")
        if L.ndim != 2 or c.ndim != 2 or L.shape[0] != c.shape[0] + 1:
            raise ValueError(f"run {r}: curriculum {c.shape} and losses {L.shape} do not describe one run")
        if m is not None and L.shape[1] != m:
            raise ValueError(f"run {r}: {L.shape[1]} test examples, run 0 has {m}")
        m = L.shape[1]
        filtered.append(momentum_counts(c, n_train, momentum=momentum))
        changes.append(np.diff(L, axis=0))
        step_of.append(np.arange(c.shape[0]))
    assert m is not None
    M, Y, steps = np.concatenate(filtered), np.concatenate(changes), np.concatenate(step_of)
    S, T = len(Y), int(steps.max()) + 1
    b = max(np.asarray(c).shape[-1] for c in curricula)
    counts = observation_counts(np.concatenate([pad_batches(as_curriculum(c), b) for c in curricula]), n_train)
    E = np.zeros((S, T))
    E[np.arange(S), steps] = 1.0
    Z = np.hstack([E, M])
    zu = uu = uy = None
    if prior is not None:
        P = np.asarray(prior, dtype=np.float64)
        if P.shape != (n_train, m):
            raise ValueError(f"prior must have shape (n_train, m) = {(n_train, m)}, got {P.shape}")
        if not np.isfinite(P).all():
            raise ValueError("prior holds non-finite values")
        U = M @ P  # (S, m): the prior's predicted change, one column per test example
        zu = Z.T @ U / S
        uu = np.einsum("sj,sj->j", U, U) / S
        uy = np.einsum("sj,sj->j", U, Y) / S
    return DynamicsSystem(
        gram=Z.T @ Z / S, zy=Z.T @ Y / S, zu=zu, uu=uu, uy=uy, n_steps=T, counts=counts, momentum=float(momentum)
    )


def solve_dynamics(system: DynamicsSystem, *, l2: float) -> DynamicsFit:
    """The exact minimiser for one penalty: the shared design by Cholesky, the prior's column by Schur complement.

    Raises:
        ValueError: If ``l2`` is negative or not finite, or the observations do not determine B at ``l2 = 0``.
    """
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    T, n = system.n_steps, len(system.counts)
    K = system.gram.copy()
    K[np.diag_indices(T)] += EPS
    K[T + np.arange(n), T + np.arange(n)] += l2
    try:
        chol = sla.cho_factor(K)
    except np.linalg.LinAlgError:
        raise ValueError(
            "fit_dynamics: the observations do not determine B (a training example never observed, or too few "
            "steps): use l2 > 0"
        ) from None
    W = sla.cho_solve(chol, system.zy)
    scale = np.zeros(W.shape[1])
    if system.zu is not None and system.uu is not None and system.uy is not None:
        KZU = sla.cho_solve(chol, system.zu)
        denominator = system.uu + EPS - np.einsum("kj,kj->j", system.zu, KZU)
        scale = (system.uy - np.einsum("kj,kj->j", system.zu, W)) / denominator
        W = W - KZU * scale
    return DynamicsFit(
        steps=W[:T], scale=scale, B=W[T:].T.copy(), counts=system.counts, momentum=system.momentum, l2=float(l2)
    )


def fit_dynamics(
    curricula: Sequence[ArrayLike],
    losses: Sequence[ArrayLike],
    n_train: int,
    *,
    momentum: float,
    l2: float,
    prior: ArrayLike | None = None,
) -> DynamicsFit:
    """Exact least-squares fit of time effects, prior scale and additive influence to one-step loss changes.

    Minimises the mean squared one-step error plus ``l2 * ||B[j]||^2`` (and ``EPS`` on the time effects and scale)
    for every test example j (:func:`dynamics_system` then :func:`solve_dynamics`).

    Args:
        curricula: R curricula, each (T_r, b).
        losses: R loss trajectories, each (T_r + 1, m).
        n_train: Pool size n.
        momentum: kappa of :func:`momentum_counts`.
        l2: Ridge penalty on B (added to the mean squared one-step error).
        prior: (n, m) prior influence P, or None.

    Returns:
        The fit.
    """
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    return solve_dynamics(dynamics_system(curricula, losses, n_train, momentum=momentum, prior=prior), l2=l2)


def simulate_dynamics(
    curriculum: ArrayLike,
    initial_loss: ArrayLike,
    *,
    steps: ArrayLike,
    scale: ArrayLike,
    B: ArrayLike,
    momentum: float,
    prior: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Roll the model forward from the initial losses.

    Args:
        curriculum: (T, b) or (K, T, b).
        initial_loss: (m,) or (K, m).
        steps: (T_fit, m) time effects; steps beyond T_fit add none (the shared dynamics have ended).
        scale: (m,) prior scale.
        B: (m, n) additive influence.
        momentum: kappa.
        prior: (n, m) prior influence, or None (then ``scale`` is ignored).

    Returns:
        (T + 1, m) or (K, T + 1, m).
    """
    B = np.asarray(B, dtype=np.float64)
    m, n = B.shape
    M = momentum_counts(curriculum, n, momentum=momentum)
    T = M.shape[-2]
    gamma = np.zeros((T, m))
    fitted = np.asarray(steps, dtype=np.float64)
    gamma[: min(T, len(fitted))] = fitted[:T]
    change = M @ B.T + gamma
    if prior is not None:
        change = change + (M @ np.asarray(prior, dtype=np.float64)) * np.asarray(scale, dtype=np.float64)
    start = np.asarray(initial_loss, dtype=np.float64)
    if start.shape[-1] != m or start.shape[:-1] != M.shape[:-2]:
        raise ValueError(f"initial_loss has shape {start.shape}; want {(*M.shape[:-2], m)}")
    path = np.cumsum(change, axis=-2) + start[..., None, :]
    return np.concatenate([start[..., None, :], path], axis=-2)
