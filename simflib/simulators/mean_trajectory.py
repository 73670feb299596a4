"""The curriculum-blind baseline: every run moves each test example's loss the way the fitted runs did on average.

A simulator earns its keep only by predicting what *this* curriculum does beyond what every run does anyway. This
predictor ignores the curriculum altogether: for test example j it predicts

    L_t(z_j) = L_0(z_j) + mean over fit runs r of (L_t^r(z_j) - L_0^r(z_j)),

the mean trajectory of z_j shifted to the run's own initial loss. It captures the dynamics shared by all runs (the
loss falls, then levels off) and which test examples are hard from the start, which is what the paper's all-steps
MSE and final-step Spearman mostly reward. It predicts the same change for every curriculum, so its linear
datamodeling score is undefined (no ranking of runs), and its counterfactual prediction is "no change at all".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import as_curriculum, as_losses
from simflib.runs import Run, RunSet
from simflib.simulators.base import as_runs, check_n_train


def mean_change(losses: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Mean change from the initial loss at each step, over runs of possibly different lengths.

    Args:
        losses: R arrays of shape (T_r + 1, m).

    Returns:
        (max T_r + 1, m): row t averages ``L_t - L_0`` over the runs that reach step t (row 0 is zero).
    """
    if not losses:
        raise ValueError("mean_change: no runs")
    horizon = max(x.shape[0] for x in losses)
    total = np.zeros((horizon, losses[0].shape[1]))
    count = np.zeros((horizon, 1))
    for x in losses:
        total[: x.shape[0]] += x - x[0]
        count[: x.shape[0]] += 1
    return total / count


class MeanTrajectory:
    """Curriculum-blind baseline: each test example's mean trajectory over the fit runs, shifted to ``L_0``.

    Args:
        n_train: Size of the training pool n (curricula are checked against it; they do not change the prediction).

    Attributes (after ``fit``):
        delta: (T + 1, m) mean change from the initial loss per step and test example.
        test_ids: (m,) ids of the fitted test examples (from the run set's ``meta["test_ids"]``, else their positions).

    A curriculum longer than the fitted runs keeps the last step's change (the shared dynamics have levelled off by
    then); the result only depends on the curriculum's length.
    """

    label: ClassVar[str] = "Curriculum-blind"
    supports_unseen_tests: ClassVar[bool] = True

    def __init__(self, n_train: int) -> None:
        self.n_train = check_n_train(n_train)
        self.delta: NDArray[np.float64] | None = None
        self.test_ids: list[Any] | None = None

    def __repr__(self) -> str:
        state = "unfitted" if self.delta is None else f"m={self.delta.shape[1]}, T={self.delta.shape[0] - 1}"
        return f"{type(self).__name__}(n_train={self.n_train}, {state})"

    def fit(self, runs: RunSet | Sequence[Run], *, val: RunSet | Sequence[Run] | None = None) -> MeanTrajectory:
        """Average the fit runs' trajectories relative to their initial losses.

        Args:
            runs: Fit runs.
            val: Accepted for a uniform interface; the baseline has no hyperparameter to choose.

        Returns:
            self.
        """
        data = as_runs(runs, self.n_train)
        self.delta = mean_change([r.losses for r in data])
        ids = data.meta.get("test_ids")
        self.test_ids = list(ids) if ids is not None and len(ids) == data.m else list(range(data.m))
        return self

    def simulate(
        self, curriculum: ArrayLike, initial_loss: ArrayLike, *, test_ids: Sequence[Any] | None = None
    ) -> NDArray[np.float64]:
        """Predict loss trajectories for one curriculum (T, b) or a stack (K, T, b), whatever it holds.

        Args:
            curriculum: (T, b) or (K, T, b) training-example indices, ``-1`` padding; only T matters.
            initial_loss: (m',) or (K, m') losses before training.
            test_ids: The ids of the m' test examples, when they are not the fitted ones in order. A test example the
                baseline was not fitted on gets the mean change over all fitted test examples.

        Returns:
            (T + 1, m') or (K, T + 1, m').
        """
        if self.delta is None:
            raise ValueError("MeanTrajectory is not fitted yet: call fit(runs) first")
        assert self.test_ids is not None
        curr = as_curriculum(curriculum, n_train=self.n_train)
        start = as_losses(np.asarray(initial_loss, dtype=np.float64)[..., None, :], where="initial_loss")[..., 0, :]
        if start.ndim != curr.ndim - 1 or start.shape[:-1] != curr.shape[:-2]:
            raise ValueError(
                f"initial_loss has shape {start.shape} but a curriculum of shape {curr.shape} needs "
                f"{curr.shape[:-2] + ('m',)}"
            )
        delta = self.delta
        if test_ids is None:
            if start.shape[-1] != delta.shape[1]:
                raise ValueError(
                    f"initial_loss has {start.shape[-1]} test examples but the baseline was fitted on {delta.shape[1]}; "
                    f"pass test_ids to simulate other test examples"
                )
        else:
            ids = list(test_ids)
            if len(ids) != start.shape[-1]:
                raise ValueError(f"test_ids names {len(ids)} test examples but initial_loss has {start.shape[-1]}")
            column = {key: k for k, key in enumerate(self.test_ids)}
            pooled = delta.mean(axis=1)
            delta = np.stack([delta[:, column[i]] if i in column else pooled for i in ids], axis=1)
        T = curr.shape[-2]
        rows = np.minimum(np.arange(T + 1), delta.shape[0] - 1)
        return start[..., None, :] + delta[rows]
