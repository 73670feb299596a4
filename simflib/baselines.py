"""Prior TDA methods as training-run simulators (§4): TracIn-Ideal, TracIn-CP and influence functions.

Each is Simfluence-Additive fitted to different one-step observations:

* **TracIn-Ideal** (Eq. 5-6): the *actual* loss reductions of recorded runs. With batch size 1 and lambda = 0,
  Simfluence-Additive's ``B`` equals minus the mean reduction per example, i.e. TracIn-Ideal divided by the number
  of steps that used the example.
* **TracIn-CP** (Eq. 7-8, 11): *hypothetical* first-order reductions at saved checkpoints,
  ``L_c(z) - eta_c grad L_c(z_i) . grad L_c(z)``, one observation per (checkpoint, training example).
* **Influence functions** (Eq. 12): *hypothetical* second-order reductions at the final checkpoint,
  ``L_T(z) - grad L(z_i)^T H^{-1} grad L(z)``.

This module holds the array side: scores from recorded losses or from precomputed gradient products, the
hypothetical observations that turn them into simulators. (The paper's ground-truth rescaling of TracIn-CP's
trajectories is a metric: :func:`simflib.functional.optimal_rescaling`.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_losses
from simflib.functional.linear import LinearFit, Observations, Variant
from simflib.runs import Run, RunSet
from simflib.storage import read_archive, write_archive


def tracin_ideal(
    runs: RunSet | Sequence[Run], n_train: int | None = None, *, expected: bool = False
) -> NDArray[np.float64]:
    """TracIn-Ideal scores (Eq. 5): the loss reduction on each test example over the steps that used each example.

    ``I[j, i] = sum over steps t whose batch holds i of (L_{t-1}(z_j) - L_t(z_j)) / |c_t|``. With batch size 1 this
    is Eq. 5 exactly; with larger batches a step's reduction is split equally among its examples, the natural
    extension (the actual reduction of a batch cannot be attributed further without a model of it).

    Args:
        runs: Recorded runs.
        n_train: Pool size (default: the run set's).
        expected: If True, average the per-run scores over runs (Expected TracIn-Ideal, Søgaard et al. 2021);
            otherwise sum over all runs (a single run gives the original TracIn-Ideal).

    Returns:
        (m, n) scores; positive means the example reduced the test loss (a proponent).
    """
    runs = list(runs) if not isinstance(runs, RunSet) else runs
    if n_train is None:
        if not isinstance(runs, RunSet):
            raise ValueError("tracin_ideal: give n_train when passing a list of runs")
        n_train = runs.n_train
    if len(runs) == 0:
        raise ValueError("tracin_ideal: no runs")
    per_run = []
    for run in runs:
        reduction = run.losses[:-1] - run.losses[1:]  # (T, m)
        curr = run.curriculum
        sizes = (curr != PAD).sum(axis=1)
        scores = np.zeros((n_train, run.m))
        for pos in range(curr.shape[1]):
            keep = curr[:, pos] != PAD
            np.add.at(scores, curr[keep, pos], reduction[keep] / sizes[keep, None])
        per_run.append(scores.T)
    stacked = np.stack(per_run)
    return stacked.mean(axis=0) if expected else stacked.sum(axis=0)


def _checked_hypothetical(loss: ArrayLike, reduction: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(C, m) losses and (C, n, m) reductions as float arrays, with shapes and values checked."""
    L = as_losses(loss, where="loss")
    R = np.asarray(reduction, dtype=np.float64)
    if R.ndim != 3 or R.shape[0] != L.shape[0] or R.shape[2] != L.shape[1]:
        raise ValueError(f"reduction must have shape (C, n, m) = ({L.shape[0]}, n, {L.shape[1]}), got {R.shape}")
    if not np.isfinite(R).all():
        c, i, j = np.argwhere(~np.isfinite(R))[0]
        raise ValueError(f"reduction: non-finite value at checkpoint {c}, training example {i}, test example {j}")
    return L, R


def hypothetical_observations(loss: ArrayLike, reduction: ArrayLike) -> Observations:
    """Batch-size-1 observations ``(i, L_c, L_c - reduction[c, i])`` for every checkpoint c and example i.

    Fitting Simfluence-Additive (lambda = 0) to them gives ``B[j, i] = -mean_c reduction[c, i, j]``: TracIn-CP
    (Eq. 11) when ``reduction[c, i, j] = eta_c grad L_c(z_i) . grad L_c(z_j)``, and influence functions (Eq. 12) when
    ``reduction[0, i, j] = grad L(z_i)^T H^{-1} grad L(z_j)`` at the final checkpoint. Simfluence-Linear fitted to
    them is Hypothetical Simfluence-Linear (Eq. 10).

    Args:
        loss: (C, m) actual losses of the test examples at each checkpoint.
        reduction: (C, n, m) hypothetical loss reductions.

    Returns:
        C * n observations over a pool of n.
    """
    L, R = _checked_hypothetical(loss, reduction)
    C, n, m = R.shape
    batches = np.tile(np.arange(n), C)[:, None]
    before = np.repeat(L, n, axis=0)
    after = before - R.reshape(C * n, m)
    return Observations.create(batches, before, after, n_train=n)


def tracin_cp(reduction: ArrayLike) -> NDArray[np.float64]:
    """TracIn-CP scores (Eq. 8) from hypothetical reductions: ``sum_c eta_c grad L_c(z_i) . grad L_c(z_j)``.

    Args:
        reduction: (C, n, m) hypothetical reductions ``eta_c grad L_c(z_i) . grad L_c(z_j)``.

    Returns:
        (m, n) scores; positive means a step on the example would have reduced the test loss.
    """
    R = np.asarray(reduction, dtype=np.float64)
    if R.ndim != 3:
        raise ValueError(f"reduction must have shape (C, n, m), got {R.shape}")
    return R.sum(axis=0).T


@dataclass(frozen=True)
class HypotheticalSums:
    """What a Simfluence fit needs of batch-size-1 hypothetical observations, summed over checkpoints.

    Every training example is observed once at every checkpoint c, from the same losses ``L_c`` (the test losses
    at the checkpoint), so the normal equations of Eq. 2 reduce, per training example i and test example j, to
    five sums. Keeping them instead of the (C, n, m) reductions lets TracIn-CP run over every step of many runs
    in constant memory, and sums of disjoint checkpoint sets add (``+``).

    Attributes:
        count: C, the number of checkpoints.
        loss: (m,) sum over checkpoints of ``L_c(z_j)``.
        loss_sq: (m,) sum of ``L_c(z_j)^2``.
        reduction: (n, m) sum of the reductions ``R_c[i, j]``.
        loss_reduction: (n, m) sum of ``L_c(z_j) R_c[i, j]``.
        batch_size: b of the runs to be simulated. A hypothetical step on z_i then stands for z_i's share of a
            batch-b step: its reduction should already be divided by b (a batch's mean-loss gradient is the mean of
            its examples' gradients, :func:`simflib.tracin.hypothetical_reductions` does this), and in the linear
            and multiplicative fits the b - 1 other examples are taken as neutral, each keeping ``L / b`` (their
            ``A = 1/b``, ``B = 0``). Without this, batch-1 hypothetical steps give ``A_i`` near 1, and a simulated
            batch of b such examples would multiply the loss by about b at every step.
    """

    count: int
    loss: NDArray[np.float64]
    loss_sq: NDArray[np.float64]
    reduction: NDArray[np.float64]
    loss_reduction: NDArray[np.float64]
    batch_size: int = 1

    @classmethod
    def from_arrays(cls, loss: ArrayLike, reduction: ArrayLike, *, batch_size: int = 1) -> HypotheticalSums:
        """Sums of (C, m) checkpoint losses and (C, n, m) reductions (checked as :func:`hypothetical_observations`)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        L, R = _checked_hypothetical(loss, reduction)
        return cls(
            count=int(L.shape[0]),
            loss=L.sum(axis=0),
            loss_sq=(L**2).sum(axis=0),
            reduction=R.sum(axis=0),
            loss_reduction=np.einsum("cm,cnm->nm", L, R),
            batch_size=int(batch_size),
        )

    @property
    def n_train(self) -> int:
        """Pool size n."""
        return int(self.reduction.shape[0])

    def solve(self, *, l2: float, variant: Variant = "linear") -> LinearFit:
        """The exact ridge fit to these sums (:func:`fit_hypothetical`): what a Simfluence simulator's ``fit`` calls
        on precomputed sufficient statistics."""
        return fit_hypothetical(self, l2=l2, variant=variant)

    @property
    def m(self) -> int:
        """Number of test examples."""
        return int(self.reduction.shape[1])

    def __add__(self, other: HypotheticalSums) -> HypotheticalSums:
        if not isinstance(other, HypotheticalSums):
            return NotImplemented
        if other.reduction.shape != self.reduction.shape or other.batch_size != self.batch_size:
            raise ValueError(
                f"cannot add sums over (n, m) = {self.reduction.shape}, batch size {self.batch_size} and "
                f"{other.reduction.shape}, batch size {other.batch_size}"
            )
        return HypotheticalSums(
            self.count + other.count,
            self.loss + other.loss,
            self.loss_sq + other.loss_sq,
            self.reduction + other.reduction,
            self.loss_reduction + other.loss_reduction,
            self.batch_size,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically as a checksummed ``simflib.storage`` archive (no pickles)."""
        arrays = {
            "loss": self.loss,
            "loss_sq": self.loss_sq,
            "reduction": self.reduction,
            "loss_reduction": self.loss_reduction,
        }
        header = {"format": SUMS_FORMAT, "version": 1, "count": self.count, "batch_size": self.batch_size}
        return write_archive(path, arrays, header, compress=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HypotheticalSums:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: Naming the file, if it is damaged or edited (checksum), or a field is missing, has the wrong
                shape or is not finite.
        """
        header, arrays = read_archive(path, fmt=SUMS_FORMAT, versions=(1,))
        count, batch_size = header.get("count"), header.get("batch_size")
        if not isinstance(count, int) or not isinstance(batch_size, int) or count < 1 or batch_size < 1:
            raise ValueError(f"{path}: header fields 'count' and 'batch_size' must be positive integers")
        reduction = arrays.get("reduction")
        n, m = reduction.shape if reduction is not None and reduction.ndim == 2 else (-1, -1)
        expected = {"loss": (m,), "loss_sq": (m,), "reduction": (n, m), "loss_reduction": (n, m)}
        for key, shape in expected.items():
            value = arrays.get(key)
            if value is None or value.shape != shape or not np.isfinite(value).all():
                got = None if value is None else value.shape
                raise ValueError(f"{path}: field {key!r} has shape {got} (want {shape}) or non-finite values")
        return cls(count=count, batch_size=batch_size, **{k: arrays[k].astype(np.float64) for k in expected})


SUMS_FORMAT = "simflib.hypothetical_sums"


def fit_hypothetical(sums: HypotheticalSums, *, l2: float, variant: Variant = "linear") -> LinearFit:
    """Exact ridge fit (Eq. 2) of Simfluence to hypothetical observations, in closed form from their sums.

    Each training example's (alpha, beta) for each test example solves its own 2x2 system, since every
    observation holds a single example. With ``batch_size`` 1 this equals
    :func:`simflib.functional.fit_linear` on :func:`hypothetical_observations` (tested), without
    materialising the C * n observations; for larger batches see :class:`HypotheticalSums`.

    Args:
        sums: Sums over checkpoints.
        l2: lambda of Eq. 2 (a sum).
        variant: ``"linear"`` (Eq. 10), ``"additive"`` (Eq. 11-12) or ``"multiplicative"``.

    Returns:
        A ``LinearFit`` with (m, n) ``A`` and ``B`` as the variant has them.

    Raises:
        ValueError: On a negative ``l2``, an unknown variant, or a singular system (``l2 = 0`` with one checkpoint
            for the linear variant).
    """
    if not np.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    if variant not in ("linear", "additive", "multiplicative"):
        raise ValueError(f"unknown variant {variant!r}")
    s0, s1, s2 = sums.count + l2, sums.loss[None, :], sums.loss_sq[None, :] + l2
    keep = 1.0 - (sums.batch_size - 1) / sums.batch_size  # the example's own share after b - 1 neutral ones
    y1 = keep * sums.loss[None, :] - sums.reduction  # sum of its part of the hypothetical losses after the step
    y2 = keep * sums.loss_sq[None, :] - sums.loss_reduction  # sum of L_c times them
    A = B = None
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant == "additive":
            B = -sums.reduction / s0
        elif variant == "multiplicative":
            A = y2 / s2
        else:
            det = s2 * s0 - s1**2
            A, B = (s0 * y2 - s1 * y1) / det, (s2 * y1 - s1 * y2) / det
    for name, p in (("A", A), ("B", B)):
        if p is not None and not np.isfinite(p).all():
            raise ValueError(
                f"fit_hypothetical: {name} is not determined (singular system); use l2 > 0 or more checkpoints"
            )
    counts = np.full(sums.n_train, sums.count, dtype=np.int64)
    return LinearFit(
        A=None if A is None else np.ascontiguousarray(A.T),
        B=None if B is None else np.ascontiguousarray(B.T),
        counts=counts,
        iterations=0,
        residual=0.0,
    )
