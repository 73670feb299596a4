"""Judging simulators against real held-out runs: per-run metrics, LDS over the runs, and mean ± std tables.

The paper's metrics (§2.2) score one run at a time. The linear datamodeling score (LDS) is a property of the whole
set of held-out runs: it asks whether a simulator ranks the runs by their effect on each test example. ``evaluate``
puts both in one tidy frame; ``summarize`` makes the paper's mean ± std table of it, with the LDS and, given the
curriculum-blind baseline's label, each simulator's improvement over it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from simflib.functional.metrics import (
    all_steps_lds,
    all_steps_mse,
    final_step_lds,
    final_step_spearman,
    mse_decomposition,
    mse_improvement,
    optimal_rescaling,
)
from simflib.runs import Run, RunSet
from simflib.simulators import Simulator

__all__ = ["PER_RUN", "PER_SET", "all_steps_mse", "evaluate", "final_step_spearman", "summarize"]

PER_RUN = ("all_steps_mse", "final_step_spearman")
"""Metrics of one run (the paper's §2.2), summarised as mean ± std over runs."""
PER_SET = ("final_step_lds", "all_steps_lds", "mse_shared", "mse_specific")
"""Metrics of the whole set of held-out runs, the same on every row of one evaluation. They are the LDS, and the
all-steps MSE split into the error shared by all runs and the curriculum-specific one
(:func:`~simflib.functional.mse_decomposition`)."""


def evaluate(
    simulator: Simulator, runs: RunSet | Sequence[Run], *, name: str | None = None, rescale: bool = False
) -> pd.DataFrame:
    """Simulate every run's curriculum from its own initial losses and score the result.

    Args:
        simulator: Anything with ``simulate(curriculum, initial_loss)``.
        runs: Held-out runs.
        name: Label for the ``simulator`` column (default: the simulator's ``label``, else its class name).
        rescale: For the MSE, multiply each simulated trajectory by the factor sigma that best fits the
            *observed* one (the paper's §5 treatment of TracIn-CP; see :func:`simflib.functional.optimal_rescaling`).
            It uses the ground truth: label such rows. The final-step Spearman and the LDS stay those of the
            unscaled prediction: the paper rescales to repair TracIn-CP's scale, which a rank correlation does not
            see, whereas a factor per test example fitted to the truth could reorder the final losses.

    Returns:
        A tidy frame with one row per run and columns ``simulator``, ``run``, ``all_steps_mse``,
        ``final_step_spearman``, and the set-level :data:`PER_SET` columns (NaN with fewer than two runs of equal
        length) and ``lds_skipped`` (test examples whose final losses are constant across runs on either side, left
        out of the final-step LDS). The decomposition is of the unscaled prediction.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("evaluate: no runs given")
    label = name or getattr(simulator, "label", None) or type(simulator).__name__
    rows, preds = [], []
    for k, run in enumerate(runs):
        pred = np.asarray(simulator.simulate(run.curriculum, run.initial_loss))
        if pred.shape != run.losses.shape:
            raise ValueError(
                f"evaluate: run {k}: {label} returned trajectories of shape {pred.shape}, expected {run.losses.shape}"
            )
        preds.append(pred)
        scaled = pred
        if rescale:
            scaled = optimal_rescaling(pred, run.losses)[1]
        rows.append(
            {
                "simulator": label,
                "run": k,
                "all_steps_mse": all_steps_mse(scaled, run.losses),
                "final_step_spearman": final_step_spearman(pred, run.losses),
            }
        )
    frame = pd.DataFrame(rows)
    if len(runs) >= 2 and len({p.shape for p in preds}) == 1:
        pred, true = np.stack(preds), np.stack([r.losses for r in runs])
        final, every = final_step_lds(pred, true), all_steps_lds(pred, true)
        frame["final_step_lds"], frame["all_steps_lds"], frame["lds_skipped"] = final.score, every.score, final.skipped
        frame["mse_shared"], frame["mse_specific"] = mse_decomposition(pred, true)
    else:
        for column in PER_SET:
            frame[column] = np.nan
        frame["lds_skipped"] = 0
    return frame


def summarize(
    per_run: pd.DataFrame, *, fmt: str = ".3g", baseline: str | None = None, by: Sequence[str] = ("simulator",)
) -> pd.DataFrame:
    """Mean ± standard deviation over runs of each per-run metric, and the LDS, per simulator.

    The standard deviation is the sample one (``ddof=1``) over runs. The LDS columns are set-level: their value is
    the mean over the frame's rows, which is the value itself for one evaluation.

    Args:
        per_run: Output of :func:`evaluate` (several may be concatenated).
        fmt: Format spec of the numbers in the formatted columns (the default keeps three significant digits, so
            that small MSEs stay readable; the paper's tables use ``".3f"``).
        baseline: The ``simulator`` label of the curriculum-blind baseline. If given, a column
            ``mse_improvement``, ``1 - MSE / MSE_baseline`` of the mean all-steps MSEs, is added, comparing rows
            that agree on every ``by`` column except ``simulator`` (e.g. the same setting).
        by: Columns to group by (``simulator`` must be among them; add ``setting`` for several settings).

    Returns:
        One row per group (in first-appearance order) with ``<metric>_mean``, ``<metric>_std`` and a formatted
        ``<metric>`` column for each per-run metric, the LDS columns, ``runs`` and, with ``baseline``,
        ``mse_improvement``.
    """
    by = list(by)
    if "simulator" not in by:
        raise ValueError(f"summarize: by must include 'simulator', got {by}")
    grouped = per_run.groupby(by, sort=False)
    out = pd.DataFrame({"runs": grouped.size()})
    for metric in (c for c in PER_RUN if c in per_run):
        mean, std = grouped[metric].mean(), grouped[metric].std(ddof=1)
        out[f"{metric}_mean"], out[f"{metric}_std"] = mean, std
        out[metric] = [f"{mu:{fmt}} ± {sd:{fmt}}" for mu, sd in zip(mean, std)]
    for metric in (c for c in PER_SET if c in per_run):
        out[metric] = grouped[metric].mean()
    if "lds_skipped" in per_run:
        out["lds_skipped"] = grouped["lds_skipped"].max()
    if baseline is not None:
        mse = out["all_steps_mse_mean"].reset_index()
        base = mse[mse["simulator"] == baseline]
        if base.empty:
            raise ValueError(
                f"summarize: baseline {baseline!r} is not among the simulators {list(dict.fromkeys(mse['simulator']))}"
            )
        rest = [c for c in by if c != "simulator"]
        reference = (
            mse.merge(base[[*rest, "all_steps_mse_mean"]], on=rest, how="left", suffixes=("", "_base"))
            if rest
            else mse.assign(all_steps_mse_mean_base=base["all_steps_mse_mean"].iloc[0])
        )
        out["mse_improvement"] = mse_improvement(
            reference["all_steps_mse_mean"].to_numpy(), reference["all_steps_mse_mean_base"].to_numpy()
        )
    return out
