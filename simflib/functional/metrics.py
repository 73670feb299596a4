"""Simulation-accuracy metrics as pure functions over trajectory arrays.

The paper's §2.2 scores one run at a time: all-steps MSE and final-step Spearman *across test examples*. Both are
dominated by what every run shares (the loss falls, hard examples stay hard), so a predictor that ignores the
curriculum scores well on them. The linear datamodeling score (LDS; Park et al. 2023, TRAK) asks what a simulator
exists for: for one test example, does it rank the *runs* by their effect on its loss? It is Spearman's rho across
runs, averaged over test examples.
"""

from __future__ import annotations

from typing import NamedTuple

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


def _rank_correlation(
    p: NDArray[np.float64], t: NDArray[np.float64], axis: int, *, rtol: float = 0.0
) -> NDArray[np.float64]:
    """Spearman's rho along ``axis`` (average ranks for ties); NaN where either side is constant.

    With ``rtol > 0``, a side whose values all agree within ``rtol`` of their largest magnitude counts as constant:
    differences at the level of rounding would otherwise rank by noise.
    """
    rp = rankdata(p, axis=axis)
    rt = rankdata(t, axis=axis)
    rp -= rp.mean(axis=axis, keepdims=True)
    rt -= rt.mean(axis=axis, keepdims=True)
    denom = np.sqrt((rp**2).sum(axis) * (rt**2).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (rp * rt).sum(axis) / np.where(denom > 0, denom, 1.0), np.nan)
    if rtol > 0:
        flat = _nearly_constant(p, axis, rtol) | _nearly_constant(t, axis, rtol)
        rho = np.where(flat, np.nan, rho)
    return rho


def _nearly_constant(x: NDArray[np.float64], axis: int, rtol: float) -> NDArray[np.bool_]:
    spread = x.max(axis=axis) - x.min(axis=axis)
    return spread <= rtol * np.abs(x).max(axis=axis)


LDS_RTOL = 1e-5
"""Values of one test example that agree across runs within this relative tolerance count as constant in the LDS.
The recorded losses are float32 computations (resolution about 1.2e-7), and runs recorded on different devices or
CPUs start from initial losses that differ by rounding (up to 1.6e-6 of their value between two CPU machines with the
same library versions, on piqa-smollm2-lora-m100), so a curriculum-blind prediction shifted to them would otherwise
rank the runs by rounding noise."""


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
    out = _rank_correlation(p[..., -1, :], t[..., -1, :], axis=-1)
    return float(out) if out.ndim == 0 else out


def lds_per_example(pred: ArrayLike, true: ArrayLike, *, step: int = -1, rtol: float = LDS_RTOL) -> NDArray[np.float64]:
    """Spearman's rho *across runs* between simulated and observed losses at one step, for each test example.

    Args:
        pred: (R, T + 1, m) simulated trajectories of R runs.
        true: (R, T + 1, m) observed trajectories of the same runs.
        step: Which step (default the last, T).
        rtol: Relative tolerance under which a test example's values across runs count as constant
            (``LDS_RTOL``, 1e-5).

    Returns:
        (m,) correlations; NaN for a test example whose simulated or observed losses are constant across runs (a
        rank correlation is undefined there).
    """
    p, t = _runs_pair(pred, true)
    return _rank_correlation(p[:, step, :], t[:, step, :], axis=0, rtol=rtol)


def final_step_lds(pred: ArrayLike, true: ArrayLike, *, rtol: float = LDS_RTOL) -> LDS:
    """Linear datamodeling score at the final step: the mean over test examples of Spearman's rho across runs.

    Args:
        pred: (R, T + 1, m) simulated trajectories of R held-out runs.
        true: (R, T + 1, m) observed trajectories.

        rtol: See :func:`lds_per_example`.

    Returns:
        An :class:`LDS`: the score, and how many test examples were skipped because their simulated or observed
        final losses are constant across runs.
    """
    rho = lds_per_example(pred, true, rtol=rtol)
    return LDS.of(rho)


def all_steps_lds(pred: ArrayLike, true: ArrayLike, *, rtol: float = LDS_RTOL) -> LDS:
    """LDS averaged over steps 1..T: at each step, the mean over test examples of Spearman's rho across runs.

    Steps at which every test example is constant (on either side) are left out of the average.

    Args:
        pred: (R, T + 1, m) simulated trajectories.
        true: (R, T + 1, m) observed trajectories.

        rtol: See :func:`lds_per_example`.

    Returns:
        An :class:`LDS` whose ``skipped`` counts the (step, test example) pairs left out.
    """
    p, t = _runs_pair(pred, true)
    rho = _rank_correlation(p[:, 1:, :], t[:, 1:, :], axis=0, rtol=rtol)  # (T, m)
    defined = ~np.isnan(rho)
    per_step = np.array([rho[k, defined[k]].mean() for k in range(rho.shape[0]) if defined[k].any()])
    score = float(per_step.mean()) if per_step.size else float("nan")
    return LDS(score, int((~defined).sum()), int(rho.size))


def step_scale(pred: ArrayLike, true: ArrayLike) -> float:
    """How large simulated steps are next to observed ones: mean ``|L_hat_t - L_hat_{t-1}|`` over mean
    ``|L_t - L_{t-1}|``, over all runs, steps and test examples (1: the right size on average).

    Args:
        pred: (..., T + 1, m) simulated trajectories.
        true: (..., T + 1, m) observed trajectories.
    """
    p, t = _pair(pred, true)
    observed = float(np.abs(np.diff(t, axis=-2)).mean())
    if observed == 0:
        raise ValueError("step_scale: the observed losses never change")
    return float(np.abs(np.diff(p, axis=-2)).mean()) / observed


def mse_improvement(mse: ArrayLike, mse_baseline: ArrayLike) -> NDArray[np.float64] | float:
    """Improvement over a baseline: ``1 - MSE / MSE_baseline`` (0 is no better, 1 is perfect, < 0 is worse).

    Args:
        mse: Mean all-steps MSE of a simulator (any shape).
        mse_baseline: That of the baseline, broadcastable to ``mse``; must be positive (NaN gives NaN).
    """
    a, b = np.asarray(mse, dtype=np.float64), np.asarray(mse_baseline, dtype=np.float64)
    if np.any(b <= 0):
        raise ValueError(f"mse_improvement: the baseline's MSE must be positive, got {b}")
    out = 1.0 - a / b
    return float(out) if out.ndim == 0 else out


class LDS(NamedTuple):
    """A linear datamodeling score with the count of undefined correlations left out of it.

    ``score`` is the mean Spearman's rho over the defined correlations (NaN if none is defined), ``skipped`` the
    number left out because one side was constant across runs, ``total`` the number computed (test examples, times
    steps for the all-steps score).
    """

    score: float
    skipped: int
    total: int

    @classmethod
    def of(cls, rho: NDArray[np.float64]) -> LDS:
        """Summarise per-example correlations (NaN = undefined)."""
        defined = ~np.isnan(rho)
        score = float(rho[defined].mean()) if defined.any() else float("nan")
        return cls(score, int((~defined).sum()), int(rho.size))


def _runs_pair(pred: ArrayLike, true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p, t = _pair(pred, true)
    if p.ndim != 3:
        raise ValueError(f"LDS needs stacked runs of shape (R, T + 1, m), got shape {p.shape}")
    if p.shape[0] < 2:
        raise ValueError(f"LDS ranks runs: it needs at least 2 runs, got R={p.shape[0]}")
    return p, t


def mse_decomposition(pred: ArrayLike, true: ArrayLike) -> tuple[float, float]:
    """Split the all-steps MSE over R runs into a shared and a curriculum-specific part.

    With bars for means over the runs, ``(p - y)^2`` averages to ``(p_bar - y_bar)^2 + ((p - p_bar) - (y - y_bar))^2``
    exactly (the cross term sums to zero over runs). The first part is the error in the dynamics every run shares;
    the second, the error in how each run departs from them, which is all that depends on the curriculum. A
    curriculum-blind predictor's second part is the observed spread across runs itself.

    Args:
        pred: (R, T + 1, m) simulated trajectories.
        true: (R, T + 1, m) observed trajectories.

    Returns:
        ``(shared, specific)``, both means over steps 1..T, test examples and runs; they add up to the mean over
        runs of :func:`all_steps_mse`.
    """
    p, t = _runs_pair(pred, true)
    p, t = p[:, 1:], t[:, 1:]
    p_bar, t_bar = p.mean(axis=0), t.mean(axis=0)
    shared = float(np.mean((p_bar - t_bar) ** 2))
    specific = float(np.mean(((p - p_bar) - (t - t_bar)) ** 2))
    return shared, specific


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
