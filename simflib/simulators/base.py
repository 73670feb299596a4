"""What every simulator shares: the :class:`Simulator` protocol and the checks on what it is fitted to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib.functional.linear import Observations
from simflib.runs import Run, RunSet


@runtime_checkable
class Simulator(Protocol):
    """Anything that maps a curriculum and initial losses to loss trajectories (§2)."""

    def simulate(self, curriculum: ArrayLike, initial_loss: ArrayLike) -> NDArray[np.float64]:
        """(T, b) -> (T + 1, m), or (K, T, b) -> (K, T + 1, m)."""
        ...


def check_n_train(n_train: object) -> int:
    """``n_train`` as an int, or a ValueError naming what was passed."""
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    return int(n_train)


def as_runs(data: RunSet | Sequence[Run], n_train: int, *, where: str = "fit") -> RunSet:
    """A run set from a run set or a list of runs, checked against the simulator's pool size."""
    if isinstance(data, RunSet):
        if data.n_train != n_train:
            raise ValueError(f"{where}: run set has n_train={data.n_train} but the simulator was built for n_train={n_train}")
        return data
    runs = list(data)
    if not runs:
        raise ValueError(f"{where}: no runs")
    return RunSet(runs, n_train)


def as_observations(data: RunSet | Sequence[Run] | Observations, n_train: int) -> Observations:
    """Observations from a run set, a list of runs or observations, checked against the pool size."""
    obs = data if isinstance(data, Observations) else as_runs(data, n_train).observations()
    if obs.n_train != n_train:
        raise ValueError(f"observations have n_train={obs.n_train} but the simulator was built for n_train={n_train}")
    return obs
