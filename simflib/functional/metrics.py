"""Simulation-accuracy metrics of the paper's §2.2, as pure functions over trajectory arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from simflib._validation import as_losses


def _pair(pred: ArrayLike, true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = as_losses(pred, where="pred")
    t = as_losses(true, where="true")
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}; both must be (..., T + 1, m)")
    if p.shape[-2] < 2:
        raise ValueError(f"trajectories need at least 2 rows (L_0 and one step), got shape {p.shape}")
    return p, t


def all_steps_mse(pred: ArrayLike, true: ArrayLike) -> NDArray[np.float64] | float:
    """All-steps mean squared error: the mean over steps 1..T and test examples of (L_t - L_hat_t)^2.

    Step 0 (the known initial loss) is excluded, as in §2.2.

    Args:
        pred: (..., T + 1, m) simulated trajectories.
        true: (..., T + 1, m) observed trajectories.

    Returns:
        Float for a single run, else an array of the leading shape.
    """
    p, t = _pair(pred, true)
    out = np.mean((p[..., 1:, :] - t[..., 1:, :]) ** 2, axis=(-2, -1))
    return float(out) if out.ndim == 0 else out


def final_step_spearman(pred: ArrayLike, true: ArrayLike) -> NDArray[np.float64] | float:
    """Spearman's rank correlation across test examples between simulated and observed losses at step T.

    Ties get average ranks. The correlation is NaN when either side is constant across test examples.

    Args:
        pred: (..., T + 1, m) simulated trajectories.
        true: (..., T + 1, m) observed trajectories.

    Returns:
        Float for a single run, else an array of the leading shape.
    """
    p, t = _pair(pred, true)
    if p.shape[-1] < 2:
        raise ValueError(f"Spearman's rho needs at least 2 test examples, got m={p.shape[-1]}")
    rp = rankdata(p[..., -1, :], axis=-1)
    rt = rankdata(t[..., -1, :], axis=-1)
    rp -= rp.mean(axis=-1, keepdims=True)
    rt -= rt.mean(axis=-1, keepdims=True)
    denom = np.sqrt((rp**2).sum(-1) * (rt**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, (rp * rt).sum(-1) / np.where(denom > 0, denom, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out
