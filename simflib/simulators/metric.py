"""Simulating a metric other than the loss: any simulator, fitted to the trajectories of a bounded per-example metric
(accuracy, probability of the correct option, exact match, F1, ROUGE-L, BLEU; all in [0, 1], see
:mod:`simflib.scoring`).

A simulator fitted to raw metric values can leave [0, 1]. Two remedies, chosen per simulator on the validation runs
by all-steps MSE in the metric's own units (GPTfluence's metric simulation has neither; its targets are unbounded
regressions):

* ``"clip"``: fit and simulate raw values, clip the simulated trajectories to the bounds;
* ``"logit"``: fit and simulate ``logit(v)`` of the values pulled into [eps, 1 - eps] (a binary metric such as exact
  match becomes ``±logit(1 - eps)``), and map the simulated values back with the logistic function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib.functional.metrics import all_steps_mse
from simflib.runs import Run, RunSet

__all__ = ["SPACES", "OnMetric", "from_space", "to_space"]

SPACES = ("clip", "logit")
"""The spaces a bounded metric can be simulated in. In ``"clip"`` the raw values are simulated and clipped to the
bounds, in ``"logit"`` their logits."""


def to_space(values: ArrayLike, space: str, *, eps: float = 0.01) -> NDArray[np.float64]:
    """Metric values in [0, 1] mapped to the space a simulator works in (``"clip"``: unchanged; ``"logit"``: the
    logit of the values clipped to [eps, 1 - eps])."""
    v = np.asarray(values, dtype=np.float64)
    if space == "clip":
        return v
    if space == "logit":
        p = np.clip(v, eps, 1 - eps)
        return np.log(p) - np.log1p(-p)
    raise ValueError(f"unknown space {space!r}; known: {', '.join(SPACES)}")


def from_space(values: ArrayLike, space: str) -> NDArray[np.float64]:
    """Simulated values mapped back to the metric, in [0, 1] (the inverse of :func:`simflib.simulators.metric.to_space` up to the clip)."""
    v = np.asarray(values, dtype=np.float64)
    if space == "clip":
        return np.clip(v, 0.0, 1.0)
    if space == "logit":
        from scipy.special import expit  # the logistic function without overflow for large |v|

        return np.asarray(expit(v), dtype=np.float64)
    raise ValueError(f"unknown space {space!r}; known: {', '.join(SPACES)}")


def _mapped(runs: RunSet, space: str, eps: float) -> RunSet:
    """The runs with their ("loss") values, a metric's trajectories, mapped by :func:`simflib.simulators.metric.to_space`."""
    part = RunSet.__new__(RunSet)
    part._runs = [Run(r.curriculum, to_space(r.losses, space, eps=eps), r.extras) for r in runs]
    part.n_train, part.meta = runs.n_train, dict(runs.meta)
    return part


class OnMetric:
    """A simulator of a bounded per-example metric, built around any simulator.

    Args:
        factory: Makes a fresh, unfitted simulator (e.g. ``lambda: SimfluenceLinear(n_train)``); one is fitted per
            space tried.
        metric: The metric's name in the runs (:meth:`simflib.RunSet.on_metric`), for labels and errors.
        space: ``"clip"``, ``"logit"``, or ``"auto"`` to choose between them on the validation runs.
        eps: The clip of :func:`simflib.simulators.metric.to_space` in logit space.

    Attributes:
        space_: The space chosen by :meth:`fit`.
        val_mse_: Validation all-steps MSE (metric units) of each space tried (empty without validation runs).
    """

    def __init__(self, factory: Callable[[], Any], metric: str, *, space: str = "auto", eps: float = 0.01) -> None:
        if space != "auto" and space not in SPACES:
            raise ValueError(f"space must be 'auto' or one of {', '.join(SPACES)}, got {space!r}")
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.factory, self.metric, self.space, self.eps = factory, metric, space, eps
        self.simulator: Any = None
        self.space_: str | None = None
        self.val_mse_: dict[str, float] = {}
        template = factory()
        self.label: str = getattr(template, "label", type(template).__name__)
        self.supports_unseen_tests: bool = bool(getattr(template, "supports_unseen_tests", False))

    def fit(self, runs: RunSet, val: RunSet | None = None, **options: Any) -> OnMetric:
        """Fit to the metric's trajectories, choosing the space (and the simulator its own hyperparameters) on
        ``val``.

        Args:
            runs: Fit runs (with the metric).
            val: Validation runs; required with ``space="auto"``.
            **options: Passed to the simulator's ``fit`` where it names them (others are ignored).

        Raises:
            ValueError: If a run lacks the metric (naming the metric and the run), or ``space="auto"`` has no
                validation runs.
        """
        fit_runs = runs.on_metric(self.metric)
        val_runs = None if val is None else val.on_metric(self.metric)
        spaces = SPACES if self.space == "auto" else (self.space,)
        if len(spaces) > 1 and val_runs is None:
            raise ValueError(f"{self.label} on {self.metric!r}: space='auto' chooses on validation runs; pass val=")
        best: tuple[float, str, Any] | None = None
        self.val_mse_ = {}
        for space in spaces:
            sim = self.factory()
            named = inspect.signature(sim.fit).parameters  # the options the simulator's own fit takes
            mapped_val = None if val_runs is None else _mapped(val_runs, space, self.eps)
            sim.fit(
                _mapped(fit_runs, space, self.eps), val=mapped_val, **{k: v for k, v in options.items() if k in named}
            )
            if val_runs is None:
                best = (np.nan, space, sim)
                continue
            mse = float(
                np.mean(
                    [
                        all_steps_mse(self._simulate(sim, space, r.curriculum, r.initial_loss), r.losses)
                        for r in val_runs
                    ]
                )
            )
            self.val_mse_[space] = mse
            if best is None or mse < best[0]:
                best = (mse, space, sim)
        assert best is not None
        _, self.space_, self.simulator = best
        return self

    def _simulate(self, sim: Any, space: str, curriculum: ArrayLike, initial: ArrayLike) -> NDArray[np.float64]:
        start = to_space(initial, space, eps=self.eps)
        return from_space(sim.simulate(curriculum, start), space)

    def simulate(self, curriculum: ArrayLike, initial_loss: ArrayLike, **options: Any) -> NDArray[np.float64]:
        """The metric's simulated trajectories, in [0, 1]: (T, b) -> (T + 1, m), or (K, T, b) -> (K, T + 1, m).

        Args:
            curriculum: Batches of training-example indices.
            initial_loss: (m,) or (K, m) values of the metric before training (named as in every simulator).
            **options: Passed to the simulator's ``simulate`` (e.g. ``test_ids=``).
        """
        if self.simulator is None or self.space_ is None:
            raise ValueError(f"{self.label} on {self.metric!r}: call fit(runs) before simulate")
        start = to_space(initial_loss, self.space_, eps=self.eps)
        return from_space(self.simulator.simulate(curriculum, start, **options), self.space_)
