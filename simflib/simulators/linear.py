"""Simfluence-Linear and its additive and multiplicative ablations (§3).

Each class is a thin stateful layer over :mod:`simflib.functional.linear`: ``fit`` solves Eq. 2 exactly for all
test examples, ``simulate`` rolls Eq. 1 forward. Parameters follow the paper: ``A`` (m, n) multiplicative and
``B`` (m, n) additive influence of training example i on test example j.

Policy for training examples never observed during fitting: their parameters are pure regularisation (A = B = 0,
which for A means "this step wipes out the loss"). By default (``unseen="raise"``) :meth:`SimfluenceLinear.simulate`
therefore refuses curricula that use them, naming the example and the step. With ``unseen="mean"`` such an example
is assumed to act like the average *observed* training example for that test example: its A and B are imputed as
the mean of the fitted A and B over observed examples. That is the natural prior when nothing is known about an
example, and it keeps a step's multiplicative factor on the scale of observed steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_curriculum
from simflib.functional.linear import LinearFit, Observations, Variant, fit_linear, simulate_linear
from simflib.functional.metrics import all_steps_mse
from simflib.runs import Run, RunSet
from simflib.simulators.base import SufficientStatistics, as_observations, check_n_train

FitData = RunSet | Sequence[Run] | Observations | SufficientStatistics

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""The lambdas :meth:`SimfluenceLinear.fit` chooses from on validation runs when no ``l2_grid`` is given."""


class SimfluenceLinear:
    """Simfluence-Linear: ``L_t = (sum_{i in c_t} A_i) L_{t-1} + sum_{i in c_t} B_i`` per test example.

    Args:
        n_train: Size of the training pool n.
        l2: lambda of Eq. 2 (added to a *sum* of squared errors). Overridden by ``fit(..., l2_grid=...)``.
        tol: Relative residual at which the conjugate-gradient solve stops.
        unseen: What ``simulate`` does with training examples no fitted step observed: ``"raise"`` (default) or
            ``"mean"`` (impute the mean influence of the observed examples; see the module docstring).

    Attributes (after ``fit``):
        A: (m, n) multiplicative influence (``None`` for the additive ablation).
        B: (m, n) additive influence (``None`` for the multiplicative ablation).
        counts: (n,) observed steps containing each training example.
        validation: DataFrame of lambda vs. validation all-steps MSE when lambda was chosen on validation runs.
    """

    variant: ClassVar[Variant] = "linear"
    label: ClassVar[str] = "Simfluence-Linear"

    def __init__(
        self, n_train: int, *, l2: float = 1e-3, tol: float = 1e-10, unseen: Literal["raise", "mean"] = "raise"
    ) -> None:
        if not np.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
        if unseen not in ("raise", "mean"):
            raise ValueError(f"unseen must be 'raise' or 'mean', got {unseen!r}")
        self.unseen = unseen
        self.n_train = check_n_train(n_train)
        self.l2 = float(l2)
        self.tol = tol
        self.A: NDArray[np.float64] | None = None
        self.B: NDArray[np.float64] | None = None
        self.counts: NDArray[np.int64] | None = None
        self.validation: pd.DataFrame | None = None
        self._fitted = False
        self._imputed: tuple[NDArray[np.float64] | None, NDArray[np.float64] | None] = (None, None)

    def __repr__(self) -> str:
        state = f"m={self.m}" if self._fitted else "unfitted"
        return f"{type(self).__name__}(n_train={self.n_train}, l2={self.l2:g}, {state})"

    @property
    def m(self) -> int:
        """Number of test examples the simulator was fitted for."""
        self._require_fitted()
        ref = self.A if self.A is not None else self.B
        assert ref is not None
        return int(ref.shape[0])

    def fit(
        self,
        runs: FitData,
        *,
        val: RunSet | Sequence[Run] | None = None,
        l2_grid: Iterable[float] | None = None,
    ) -> SimfluenceLinear:
        """Fit A and B to observed (or hypothetical) one-step losses by exact ridge regression.

        Args:
            runs: Runs, raw observations, or the sums of hypothetical observations (TracIn-CP's and influence
                functions' one-step losses, §4.2-4.3) to fit.
            val: Validation runs: lambda is chosen by their all-steps MSE (the paper's 2 runs). Without them the
                simulator keeps its ``l2``.
            l2_grid: Candidate lambdas (default :data:`simflib.simulators.L2_GRID` when ``val`` is given).

        Returns:
            self.
        """
        if isinstance(runs, SufficientStatistics):
            if runs.n_train != self.n_train:
                raise ValueError(
                    f"sums are over n_train={runs.n_train} but the simulator was built for n_train={self.n_train}"
                )
            sums = runs

            def solve(l2: float, x0: tuple | None) -> LinearFit:  # type: ignore[type-arg]
                return sums.solve(l2=l2, variant=self.variant)
        else:
            obs = as_observations(runs, self.n_train)

            def solve(l2: float, x0: tuple | None) -> LinearFit:  # type: ignore[type-arg]
                return fit_linear(obs, l2=l2, variant=self.variant, tol=self.tol, x0=x0)

        if l2_grid is None:
            if val is None:
                self._set(solve(self.l2, None))
                return self
            l2_grid = L2_GRID
        grid = sorted({float(x) for x in l2_grid}, reverse=True)
        if not grid:
            raise ValueError("fit: l2_grid is empty")
        if val is None:
            raise ValueError("fit: choosing lambda from l2_grid needs validation runs (val=...)")
        val_runs = list(val)
        if not val_runs:
            raise ValueError("fit: val holds no runs")
        rows, best, start = [], None, None
        for l2 in grid:  # large to small lambda, each warm-started from the last
            result = solve(l2, start)
            start = (result.A, result.B)
            self._set(result)
            mse = float(
                np.mean([all_steps_mse(self.simulate(r.curriculum, r.initial_loss), r.losses) for r in val_runs])
            )
            rows.append({"l2": l2, "val_all_steps_mse": mse})
            if best is None or mse < best[0]:
                best = (mse, l2, result)
        assert best is not None
        self.l2 = best[1]
        self._set(best[2])
        self.validation = pd.DataFrame(rows).sort_values("l2").reset_index(drop=True)
        return self

    def _set(self, result: LinearFit) -> None:
        self.A, self.B, self.counts = result.A, result.B, result.counts
        self._fitted = True
        seen = result.counts > 0
        if seen.all() or not seen.any():
            self._imputed = (self.A, self.B)
            return

        def impute(p: NDArray[np.float64] | None) -> NDArray[np.float64] | None:
            if p is None:
                return None
            out = p.copy()
            out[:, ~seen] = p[:, seen].mean(axis=1, keepdims=True)
            return out

        self._imputed = (impute(self.A), impute(self.B))

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(runs) first")

    def simulate(self, curriculum: ArrayLike, initial_loss: ArrayLike) -> NDArray[np.float64]:
        """Predict loss trajectories for one curriculum (T, b) or a stack (K, T, b).

        Args:
            curriculum: (T, b) or (K, T, b) training-example indices, ``-1`` padding.
            initial_loss: (m,) or (K, m) losses before training.

        Returns:
            (T + 1, m) or (K, T + 1, m).

        Raises:
            ValueError: With ``unseen="raise"``, if the curriculum uses a training example never observed during
                fitting.
        """
        self._require_fitted()
        assert self.counts is not None
        curr = as_curriculum(curriculum, n_train=self.n_train)
        if self.unseen == "mean":
            return simulate_linear(curr, initial_loss, A=self._imputed[0], B=self._imputed[1])
        unseen = (self.counts == 0)[np.where(curr == PAD, 0, curr)] & (curr != PAD)
        if unseen.any():
            pos = np.argwhere(unseen)[0]
            *lead, row, _ = pos.tolist()
            which = f"curriculum {lead[0]}, " if lead else ""
            raise ValueError(
                f"{which}step {row + 1} uses training example {curr[tuple(pos)]}, which no fitted step observed: "
                f"its influence is unknown (fit on runs that include it)"
            )
        return simulate_linear(curr, initial_loss, A=self.A, B=self.B)

    def influence_frame(self) -> pd.DataFrame:
        """Tidy (test example, training example, A, B, observed steps) table of the fitted parameters."""
        self._require_fitted()
        assert self.counts is not None
        m, n = self.m, self.n_train
        frame = pd.DataFrame(
            {
                "test_example": np.repeat(np.arange(m), n),
                "train_example": np.tile(np.arange(n), m),
            }
        )
        if self.A is not None:
            frame["A"] = self.A.ravel()
        if self.B is not None:
            frame["B"] = self.B.ravel()
        frame["observed_steps"] = np.tile(self.counts, m)
        return frame


class SimfluenceAdditive(SimfluenceLinear):
    """Simfluence-Additive (alpha == 1): ``L_t = L_{t-1} + sum_{i in c_t} B_i``; equals TracIn-Ideal (§4.1)."""

    variant: ClassVar[Variant] = "additive"
    label: ClassVar[str] = "Simfluence-Additive"


class SimfluenceMultiplicative(SimfluenceLinear):
    """Simfluence-Multiplicative (beta == 0): ``L_t = (sum_{i in c_t} A_i) L_{t-1}``."""

    variant: ClassVar[Variant] = "multiplicative"
    label: ClassVar[str] = "Simfluence-Multiplicative"
