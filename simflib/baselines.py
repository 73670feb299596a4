"""Prior TDA methods as training-run simulators (§4): TracIn-Ideal, TracIn-CP and influence functions.

Each is Simfluence-Additive fitted to different one-step observations:

* **TracIn-Ideal** (Eq. 5-6): the *actual* loss reductions of recorded runs. With batch size 1 and lambda = 0,
  Simfluence-Additive's ``B`` equals minus the mean reduction per example, i.e. TracIn-Ideal divided by the number
  of steps that used the example.
* **TracIn-CP** (Eq. 7-8, 11): *hypothetical* first-order reductions at saved checkpoints,
  ``L_c(z) - eta_c grad L_c(z_i) . grad L_c(z)``, one observation per (checkpoint, training example).
* **Influence functions** (Eq. 12): *hypothetical* second-order reductions at the final checkpoint,
  ``L_T(z) - grad L(z_i)^T H^{-1} grad L(z)``.

This module holds the array side: scores from recorded losses or from precomputed gradient products, the
hypothetical observations that turn them into simulators, and the paper's ground-truth rescaling of TracIn-CP's
trajectories.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_losses
from simflib.functional.linear import Observations
from simflib.runs import Run, RunSet


def tracin_ideal(runs: RunSet | Sequence[Run], n_train: int | None = None, *, expected: bool = False) -> NDArray[np.float64]:
    """TracIn-Ideal scores (Eq. 5): the loss reduction on each test example over the steps that used each example.

    ``I[j, i] = sum over steps t whose batch holds i of (L_{t-1}(z_j) - L_t(z_j)) / |c_t|``. With batch size 1 this
    is Eq. 5 exactly; with larger batches a step's reduction is split equally among its examples, the natural
    extension (the actual reduction of a batch cannot be attributed further without a model of it).

    Args:
        runs: Recorded runs.
        n_train: Pool size (default: the run set's).
        expected: If True, average the per-run scores over runs (Expected TracIn-Ideal, Søgaard et al. 2021);
            otherwise sum over all runs (a single run gives the original TracIn-Ideal).

    Returns:
        (m, n) scores; positive means the example reduced the test loss (a proponent).
    """
    runs = list(runs) if not isinstance(runs, RunSet) else runs
    if n_train is None:
        if not isinstance(runs, RunSet):
            raise ValueError("tracin_ideal: give n_train when passing a list of runs")
        n_train = runs.n_train
    if len(runs) == 0:
        raise ValueError("tracin_ideal: no runs")
    per_run = []
    for run in runs:
        reduction = run.losses[:-1] - run.losses[1:]  # (T, m)
        curr = run.curriculum
        sizes = (curr != PAD).sum(axis=1)
        scores = np.zeros((n_train, run.m))
        for pos in range(curr.shape[1]):
            keep = curr[:, pos] != PAD
            np.add.at(scores, curr[keep, pos], reduction[keep] / sizes[keep, None])
        per_run.append(scores.T)
    stacked = np.stack(per_run)
    return stacked.mean(axis=0) if expected else stacked.sum(axis=0)


def hypothetical_observations(
    loss: ArrayLike, reduction: ArrayLike
) -> Observations:
    """Batch-size-1 observations ``(i, L_c, L_c - reduction[c, i])`` for every checkpoint c and example i.

    Fitting Simfluence-Additive (lambda = 0) to them gives ``B[j, i] = -mean_c reduction[c, i, j]``: TracIn-CP
    (Eq. 11) when ``reduction[c, i, j] = eta_c grad L_c(z_i) . grad L_c(z_j)``, and influence functions (Eq. 12) when
    ``reduction[0, i, j] = grad L(z_i)^T H^{-1} grad L(z_j)`` at the final checkpoint. Simfluence-Linear fitted to
    them is Hypothetical Simfluence-Linear (Eq. 10).

    Args:
        loss: (C, m) actual losses of the test examples at each checkpoint.
        reduction: (C, n, m) hypothetical loss reductions.

    Returns:
        C * n observations over a pool of n.
    """
    L = as_losses(loss, where="loss")
    R = np.asarray(reduction, dtype=np.float64)
    if R.ndim != 3 or R.shape[0] != L.shape[0] or R.shape[2] != L.shape[1]:
        raise ValueError(f"reduction must have shape (C, n, m) = ({L.shape[0]}, n, {L.shape[1]}), got {R.shape}")
    if not np.isfinite(R).all():
        c, i, j = np.argwhere(~np.isfinite(R))[0]
        raise ValueError(f"reduction: non-finite value at checkpoint {c}, training example {i}, test example {j}")
    C, n, m = R.shape
    batches = np.tile(np.arange(n), C)[:, None]
    before = np.repeat(L, n, axis=0)
    after = before - R.reshape(C * n, m)
    return Observations.create(batches, before, after, n_train=n)


def optimal_rescaling(pred: ArrayLike, true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The paper's §5 rescaling of a trajectory by the factor that best fits the *observed* losses.

    For each trajectory (each run and test example), ``sigma = argmin sum_{t=1..T} (sigma L_hat_t - L_t)^2
    = sum L_hat_t L_t / sum L_hat_t^2``. It uses the ground truth, so a rescaled simulator has an unfair advantage:
    report it separately and label it so.

    Args:
        pred: (..., T + 1, m) simulated trajectories.
        true: (..., T + 1, m) observed trajectories.

    Returns:
        sigma of shape (..., m), and the rescaled trajectories (step 0 kept as given).
    """
    p, t = as_losses(pred, where="pred"), as_losses(true, where="true")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} must have the same shape")
    num = (p[..., 1:, :] * t[..., 1:, :]).sum(axis=-2)
    den = (p[..., 1:, :] ** 2).sum(axis=-2)
    sigma = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    out = p.copy()
    out[..., 1:, :] *= sigma[..., None, :]
    return sigma, out
