"""Judging simulators against real held-out runs: per-run metrics and mean ± std tables (§2.2, §5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from simflib.functional.metrics import all_steps_mse, final_step_spearman
from simflib.runs import Run, RunSet
from simflib.simulators import Simulator

__all__ = ["all_steps_mse", "evaluate", "final_step_spearman", "summarize"]


def evaluate(
    simulator: Simulator, runs: RunSet | Sequence[Run], *, name: str | None = None, rescale: bool = False
) -> pd.DataFrame:
    """Simulate every run's curriculum from its own initial losses and score the result.

    Args:
        simulator: Anything with ``simulate(curriculum, initial_loss)``.
        runs: Held-out runs.
        name: Label for the ``simulator`` column (default: the class name).
        rescale: For the MSE, multiply each simulated trajectory by the factor sigma that best fits the
            *observed* one (the paper's §5 treatment of TracIn-CP; see :func:`simflib.baselines.optimal_rescaling`).
            It uses the ground truth: label such rows. The final-step Spearman stays that of the unscaled
            prediction: the paper rescales to repair TracIn-CP's scale, which a rank correlation does not see,
            whereas a factor per test example fitted to the truth could reorder the final losses.

    Returns:
        A tidy frame with one row per run and columns ``simulator``, ``run``, ``all_steps_mse`` and
        ``final_step_spearman``.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("evaluate: no runs given")
    label = name or type(simulator).__name__
    rows = []
    for k, run in enumerate(runs):
        pred = np.asarray(simulator.simulate(run.curriculum, run.initial_loss))
        if pred.shape != run.losses.shape:
            raise ValueError(
                f"evaluate: run {k}: {label} returned trajectories of shape {pred.shape}, expected {run.losses.shape}"
            )
        scaled = pred
        if rescale:
            from simflib.baselines import optimal_rescaling

            scaled = optimal_rescaling(pred, run.losses)[1]
        rows.append(
            {
                "simulator": label,
                "run": k,
                "all_steps_mse": all_steps_mse(scaled, run.losses),
                "final_step_spearman": final_step_spearman(pred, run.losses),
            }
        )
    return pd.DataFrame(rows)


def summarize(per_run: pd.DataFrame, *, fmt: str = ".3g") -> pd.DataFrame:
    """Mean ± standard deviation over runs of each metric, per simulator, as in the paper's tables.

    The standard deviation is the sample one (``ddof=1``) over runs.

    Args:
        per_run: Output of :func:`evaluate` (several may be concatenated).
        fmt: Format spec of the numbers in the formatted ``"mean ± std"`` columns (the default keeps three
            significant digits, so that small MSEs stay readable; the paper's tables use ``".3f"``).

    Returns:
        One row per simulator (in first-appearance order) with ``<metric>_mean``, ``<metric>_std`` and a
        formatted ``<metric>`` column for each metric, and ``runs``.
    """
    metrics = [c for c in ("all_steps_mse", "final_step_spearman") if c in per_run]
    order = list(dict.fromkeys(per_run["simulator"]))
    grouped = per_run.groupby("simulator", sort=False)
    out = pd.DataFrame(index=pd.Index(order, name="simulator"))
    out["runs"] = grouped.size()
    for metric in metrics:
        mean, std = grouped[metric].mean(), grouped[metric].std(ddof=1)
        out[f"{metric}_mean"], out[f"{metric}_std"] = mean, std
        out[metric] = [f"{mu:{fmt}} ± {sd:{fmt}}" for mu, sd in zip(mean[order], std[order])]
    return out
