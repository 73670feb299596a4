"""What every simulator shares: the :class:`Simulator` protocol and the checks on what it is fitted to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import pad_batches
from simflib.functional.linear import LinearFit, Observations, Variant
from simflib.runs import Run, RunSet


@runtime_checkable
class Simulator(Protocol):
    """Anything that maps a curriculum and initial losses to loss trajectories (§2)."""

    def simulate(self, curriculum: ArrayLike, initial_loss: ArrayLike) -> NDArray[np.float64]:
        """(T, b) -> (T + 1, m), or (K, T, b) -> (K, T + 1, m)."""
        ...


@runtime_checkable
class SufficientStatistics(Protocol):
    """Precomputed statistics a Simfluence simulator can be fitted to instead of runs, such as the hypothetical
    observations of TracIn-CP and influence functions (:class:`simflib.baselines.HypotheticalSums`). The attribution
    methods implement it; the simulators do not depend on them."""

    @property
    def n_train(self) -> int:
        """Pool size n."""
        ...

    def solve(self, *, l2: float, variant: Variant) -> LinearFit:
        """The exact ridge fit of the given variant."""
        ...


def observations(runs: RunSet) -> Observations:
    """All one-step observations ``(c_t, L_{t-1}, L_t)`` of all runs, for fitting (Eq. 2-3)."""
    b = max(r.curriculum.shape[1] for r in runs)
    batches = np.concatenate([pad_batches(r.curriculum, b) for r in runs])
    before = np.concatenate([r.losses[:-1] for r in runs])
    after = np.concatenate([r.losses[1:] for r in runs])
    return Observations(batches, before, after, runs.n_train)


def check_n_train(n_train: object) -> int:
    """``n_train`` as an int, or a ValueError naming what was passed."""
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    return int(n_train)


def as_runs(data: RunSet | Sequence[Run], n_train: int, *, where: str = "fit") -> RunSet:
    """A run set from a run set or a list of runs, checked against the simulator's pool size."""
    if isinstance(data, RunSet):
        if data.n_train != n_train:
            raise ValueError(
                f"{where}: run set has n_train={data.n_train} but the simulator was built for n_train={n_train}"
            )
        return data
    runs = list(data)
    if not runs:
        raise ValueError(f"{where}: no runs")
    return RunSet(runs, n_train)


def as_observations(data: RunSet | Sequence[Run] | Observations, n_train: int) -> Observations:
    """Observations from a run set, a list of runs or observations, checked against the pool size."""
    obs = data if isinstance(data, Observations) else observations(as_runs(data, n_train))
    if obs.n_train != n_train:
        raise ValueError(f"observations have n_train={obs.n_train} but the simulator was built for n_train={n_train}")
    return obs
