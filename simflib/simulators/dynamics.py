"""Simfluence-TE and Simfluence-TE-Grad: time effects, AdamW's momentum, and a gradient prior.

Thin classes over :mod:`simflib.functional.dynamics` (the model and its exact fit are described there):

* :class:`SimfluenceTE` learns a time effect per step and test example (the change every run shares) and an
  additive influence per (test, training) pair, with a batch's influence spread over the following steps by
  AdamW's first-moment filter;
* :class:`SimfluenceTEGrad` adds the prior ``c[j] * P[i, j]`` from gradient products at the initial model
  (:class:`~simflib.simulators.features.ExampleFeatures`), so that the runs only have to correct a prediction made
  before training, and a test example no run was fitted on gets its influence from its own gradient.

Both choose the momentum kappa and the ridge penalty on validation runs by all-steps MSE, as Simfluence chooses
lambda.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from simflib._validation import as_curriculum
from simflib.functional.dynamics import DynamicsFit, DynamicsSystem, dynamics_system, simulate_dynamics, solve_dynamics
from simflib.functional.metrics import all_steps_mse
from simflib.runs import Run, RunSet
from simflib.simulators.base import as_runs, check_n_train
from simflib.simulators.features import ExampleFeatures

MOMENTUM_GRID = (0.0, 0.5, 0.8, 0.9, 0.95)
"""The kappas :meth:`SimfluenceTE.fit` chooses from on validation runs (AdamW's default beta_1 is 0.9)."""
DYNAMICS_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
"""The ridge penalties on B chosen from on validation runs (on the *mean* squared one-step error)."""


class SimfluenceTE:
    """Simfluence with time effects and a momentum kernel: ``L_t - L_{t-1} = gamma_t + sum_i M_t[i] B[:, i]``.

    Args:
        n_train: Size of the training pool n.
        l2: Ridge penalty on B, kept when ``fit`` has no validation runs.
        momentum: Kernel kappa, kept when ``fit`` has no validation runs.

    Attributes (after ``fit``):
        params: The :class:`~simflib.functional.DynamicsFit`.
        test_ids: Ids of the fitted test examples.
        validation: DataFrame of (momentum, l2) vs validation all-steps MSE, when chosen on validation runs.

    ``simulate(..., test_ids=...)`` also takes test examples that were not fitted: their time effects and influence
    are the means over the fitted ones (plus, for :class:`SimfluenceTEGrad`, their own gradient prior).
    """

    label: ClassVar[str] = "Simfluence-TE"
    supports_unseen_tests: ClassVar[bool] = True

    def __init__(self, n_train: int, *, l2: float = 1e-2, momentum: float = 0.9) -> None:
        self.n_train = check_n_train(n_train)
        self.l2, self.momentum = float(l2), float(momentum)
        self.params: DynamicsFit | None = None
        self.test_ids: list[Any] | None = None
        self.validation: pd.DataFrame | None = None
        self._prior: NDArray[np.float64] | None = None

    def __repr__(self) -> str:
        state = "unfitted" if self.params is None else f"m={self.params.B.shape[0]}"
        return f"{type(self).__name__}(n_train={self.n_train}, l2={self.l2:g}, momentum={self.momentum:g}, {state})"

    def _prior_for(self, runs: RunSet, test_ids: Sequence[Any]) -> NDArray[np.float64] | None:
        return None

    def _system(self, runs: RunSet, momentum: float) -> DynamicsSystem:
        return dynamics_system(
            [r.curriculum for r in runs], [r.losses for r in runs], self.n_train, momentum=momentum, prior=self._prior
        )

    def fit(
        self,
        runs: RunSet | Sequence[Run],
        *,
        val: RunSet | Sequence[Run] | None = None,
        l2_grid: Iterable[float] | None = None,
        momentum_grid: Iterable[float] | None = None,
    ) -> SimfluenceTE:
        """Fit exactly; with validation runs, choose (momentum, l2) from the grids by their all-steps MSE.

        Args:
            runs: Fit runs.
            val: Validation runs.
            l2_grid: Candidate penalties (default :data:`simflib.simulators.DYNAMICS_L2_GRID` when ``val`` is given).
            momentum_grid: Candidate kappas (default :data:`simflib.simulators.MOMENTUM_GRID` when ``val`` is given).

        Returns:
            self.
        """
        data = as_runs(runs, self.n_train)
        self.test_ids = data.test_ids()
        self._prior = self._prior_for(data, self.test_ids)
        if val is None:
            if l2_grid is not None or momentum_grid is not None:
                raise ValueError("fit: choosing from a grid needs validation runs (val=...)")
            self.params = solve_dynamics(self._system(data, self.momentum), l2=self.l2)
            return self
        val_runs = list(val)
        if not val_runs:
            raise ValueError("fit: val holds no runs")
        rows, best = [], None
        for kappa in sorted({float(k) for k in (momentum_grid if momentum_grid is not None else MOMENTUM_GRID)}):
            system = self._system(data, kappa)  # one pass over the runs per kappa; each penalty is one solve
            for l2 in sorted({float(x) for x in (l2_grid if l2_grid is not None else DYNAMICS_L2_GRID)}):
                self.params = solve_dynamics(system, l2=l2)
                mse = float(
                    np.mean([all_steps_mse(self.simulate(r.curriculum, r.initial_loss), r.losses) for r in val_runs])
                )
                rows.append({"momentum": kappa, "l2": l2, "val_all_steps_mse": mse})
                if best is None or mse < best[0]:
                    best = (mse, kappa, l2, self.params)
        if best is None:
            raise ValueError("fit: an empty grid")
        _, self.momentum, self.l2, self.params = best
        self.validation = pd.DataFrame(rows)
        return self

    def _parameters(
        self, test_ids: Sequence[Any] | None, m: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None]:
        """(steps, scale, B, prior) for the requested test examples; unfitted ones get the fitted means."""
        if self.params is None or self.test_ids is None:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(runs) first")
        p = self.params
        if test_ids is None:
            if m != len(self.test_ids):
                raise ValueError(
                    f"initial_loss has {m} test examples but the simulator was fitted on {len(self.test_ids)}; "
                    f"pass test_ids to simulate other test examples"
                )
            return p.steps, p.scale, p.B, self._prior
        ids = list(test_ids)
        if len(ids) != m:
            raise ValueError(f"test_ids names {len(ids)} test examples but initial_loss has {m}")
        where = {key: k for k, key in enumerate(self.test_ids)}
        cols = [where.get(t, -1) for t in ids]
        known = np.array([c >= 0 for c in cols])
        idx = np.array([max(c, 0) for c in cols])
        steps = np.where(known, p.steps[:, idx], p.steps.mean(axis=1, keepdims=True))
        scale = np.where(known, p.scale[idx], p.scale.mean())
        B = np.where(known[:, None], p.B[idx], p.B.mean(axis=0))
        return steps, scale, B, self._prior_columns(ids)

    def _prior_columns(self, ids: Sequence[Any]) -> NDArray[np.float64] | None:
        return None

    def simulate(
        self, curriculum: ArrayLike, initial_loss: ArrayLike, *, test_ids: Sequence[Any] | None = None
    ) -> NDArray[np.float64]:
        """Predict loss trajectories.

        Args:
            curriculum: (T, b) or (K, T, b).
            initial_loss: (m',) or (K, m').
            test_ids: Ids of the m' test examples when they are not the fitted ones in order; unfitted ones are
                simulated from the fitted means (and their own features, where the simulator has them).

        Returns:
            (T + 1, m') or (K, T + 1, m').
        """
        curr = as_curriculum(curriculum, n_train=self.n_train)
        start = np.asarray(initial_loss, dtype=np.float64)
        steps, scale, B, prior = self._parameters(test_ids, start.shape[-1])
        assert self.params is not None
        return simulate_dynamics(curr, start, steps=steps, scale=scale, B=B, momentum=self.params.momentum, prior=prior)


class SimfluenceTEGrad(SimfluenceTE):
    """:class:`SimfluenceTE` plus a gradient prior: ``+ c[j] * sum_i M_t[i] P[i, j]`` (module docstring).

    Args:
        n_train: Size of the training pool n.
        features: :class:`~simflib.simulators.features.ExampleFeatures` with gradient products for every fitted
            test example (and any test example to be simulated).
        l2: Ridge penalty on B (the correction to the prior).
        momentum: Kernel kappa.
    """

    label: ClassVar[str] = "Simfluence-TE-Grad"

    def __init__(
        self, n_train: int, *, features: ExampleFeatures | None = None, l2: float = 1e-2, momentum: float = 0.9
    ) -> None:
        super().__init__(n_train, l2=l2, momentum=momentum)
        self.features = features

    def _prior_for(self, runs: RunSet, test_ids: Sequence[Any]) -> NDArray[np.float64]:
        if self.features is None:
            raise ValueError(
                f"{self.label} needs the setting's example features (features=ExampleFeatures.load(...)); "
                f"compute them with `python -m simflib features <run folder>`"
            )
        self.features.check_pool(self.n_train, runs.meta.get("pool_ids"))
        return self.features.products(test_ids)

    def _prior_columns(self, ids: Sequence[Any]) -> NDArray[np.float64]:
        assert self.features is not None
        return self.features.products(ids)
