"""Curricula: which training examples each step consumes.

A curriculum is an int array of shape (T, b): row ``t - 1`` is the batch of step ``t``, ``-1`` pads a short batch.
This module builds the run protocols of the paper's §5, the identifying curriculum of its Appendix A.2, analyses
how much a set of curricula tells a simulator (§3.3, A.2), and edits curricula for counterfactual questions (§1).
Steps are numbered from 1, as in the paper (``losses[t]`` is the loss after step ``t``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_curriculum
from simflib.functional.linear import batching_matrix, observation_counts

__all__ = [
    "PROTOCOLS",
    "IdentifiabilityReport",
    "batching_matrix_of",
    "design_matrix",
    "duplicate",
    "few_shot",
    "identifiability",
    "many_shot",
    "minimal_identifiable",
    "observation_counts",
    "order_groups",
    "protocol",
    "rebatch",
    "remove",
    "run_generator",
    "runs_needed",
    "sample_curriculum",
    "swap_steps",
]


# Run protocols ---------------------------------------------------------------------------------------------------
def sample_curriculum(
    n_train: int,
    *,
    subset_size: int,
    epochs: float,
    batch_size: int,
    seed: int | np.random.Generator,
) -> NDArray[np.int64]:
    """One run of the paper's protocol: draw ``subset_size`` of the pool, train ``epochs`` epochs in batches.

    The subset is reshuffled at the start of every epoch; a fractional last epoch takes the first part of a
    fresh shuffle. Batches do not straddle epochs: an epoch whose length is not a multiple of ``batch_size`` ends
    with a short batch padded with -1 (as a data loader without ``drop_last`` does).

    Args:
        n_train: Size of the pool.
        subset_size: Examples drawn (without replacement) for this run.
        epochs: Passes over the subset; may be fractional (1.5 for the paper's many-shot setting).
        batch_size: Examples per step b.
        seed: Seed or generator; the same seed gives the same curriculum.

    Returns:
        (T, b) int64 curriculum with ``T = sum over epochs of ceil(epoch length / b)``.
    """
    if not 1 <= subset_size <= n_train:
        raise ValueError(f"subset_size must be in [1, n_train={n_train}], got {subset_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not (math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a finite number > 0, got {epochs}")
    full, part = int(math.floor(epochs)), epochs - math.floor(epochs)
    lengths = [subset_size] * full + ([int(round(part * subset_size))] if part > 0 else [])
    if sum(lengths) == 0:
        raise ValueError(
            f"epochs={epochs} of a subset of {subset_size} examples is less than one example: the run has no step"
        )
    rng = np.random.default_rng(seed)
    subset = rng.choice(n_train, size=subset_size, replace=False)
    batches = []
    for length in lengths:
        if length == 0:
            continue
        order = rng.permutation(subset)[:length]
        batches.append(rebatch(order, batch_size))
    return np.concatenate(batches)


PROTOCOLS: dict[str, dict[str, Any]] = {
    "few_shot": {"n_train": 100, "subset_size": 64, "epochs": 4.0, "batch_size": 4},
    "many_shot": {"n_train": 1536, "subset_size": 1024, "epochs": 1.5, "batch_size": 4},
}
"""The paper's run protocols of §5. Few-shot (RTE, COPA) draws 64 of a pool of 100 for 4 epochs, a (64, 4)
curriculum; many-shot (Winogrande) 1024 of 1536 for 1.5 epochs, a (384, 4) one. Batches of 4."""


def few_shot(*, seed: int | np.random.Generator, **overrides: Any) -> NDArray[np.int64]:
    """One run of the paper's few-shot protocol (:data:`PROTOCOLS`; keyword overrides of its sizes)."""
    sizes = {**PROTOCOLS["few_shot"], **overrides}
    return sample_curriculum(sizes.pop("n_train"), seed=seed, **sizes)


def many_shot(*, seed: int | np.random.Generator, **overrides: Any) -> NDArray[np.int64]:
    """One run of the paper's many-shot protocol (:data:`PROTOCOLS`; keyword overrides of its sizes)."""
    sizes = {**PROTOCOLS["many_shot"], **overrides}
    return sample_curriculum(sizes.pop("n_train"), seed=seed, **sizes)


def run_generator(seed: int, run_index: int) -> np.random.Generator:
    """The random stream of run ``run_index`` of a seeded set of runs: child ``run_index`` of
    ``SeedSequence(seed)``, so a run's curriculum does not depend on how many runs are drawn."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(run_index + 1)[run_index])


def protocol(
    n_runs: int,
    *,
    seed: int,
    n_train: int,
    subset_size: int,
    epochs: float,
    batch_size: int,
) -> NDArray[np.int64]:
    """Curricula of ``n_runs`` independent runs of one protocol, from one seed.

    Each run gets its own stream from ``numpy.random.SeedSequence(seed).spawn``, so run k's curriculum does not
    depend on how many runs are drawn.

    Returns:
        (n_runs, T, b) int64.
    """
    return np.stack(
        [
            sample_curriculum(
                n_train, subset_size=subset_size, epochs=epochs, batch_size=batch_size, seed=run_generator(seed, k)
            )
            for k in range(n_runs)
        ]
    )


def rebatch(sequence: ArrayLike, batch_size: int) -> NDArray[np.int64]:
    """Cut a flat sequence of example indices into batches of ``batch_size``, padding the last with -1.

    Returns:
        (ceil(len / b), b) int64 curriculum.
    """
    seq = np.asarray(sequence, dtype=np.int64).ravel()
    seq = seq[seq != PAD]
    steps = max(1, math.ceil(seq.size / batch_size))
    out = np.full(steps * batch_size, PAD, dtype=np.int64)
    out[: seq.size] = seq
    return out.reshape(steps, batch_size)


# Appendix A.2 ----------------------------------------------------------------------------------------------------
def minimal_identifiable(n_train: int, batch_size: int) -> NDArray[np.int64]:
    """The 2n-step curriculum of Appendix A.2 that identifies all 2n parameters with exactly 2n observed steps.

    The n-step block is the batching matrix ``Q = blockdiag(U, ..., U)`` with ``U = 11^T - I`` of size b + 1:
    step i of each block of b + 1 steps consumes every example of that block but the i-th. Q is full rank, so
    (if the test loss changes between step t and t + n) repeating it once gives a design of rank 2n at lambda 0.

    Args:
        n_train: n; must be divisible by ``batch_size + 1``.
        batch_size: b >= 1.

    Returns:
        The (2n, b) int64 curriculum, the n-step curriculum twice.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    block = batch_size + 1
    if n_train < block or n_train % block:
        raise ValueError(f"n_train={n_train} must be a positive multiple of batch_size + 1 = {block}")
    rows = []
    for start in range(0, n_train, block):
        members = np.arange(start, start + block)
        for left_out in range(block):
            rows.append(np.delete(members, left_out))
    once = np.array(rows, dtype=np.int64)
    return np.concatenate([once, once])


def batching_matrix_of(curriculum: ArrayLike, n_train: int) -> NDArray[np.float64]:
    """Dense (T, n) batching matrix Q of a curriculum: ``Q[t-1, i]`` counts example i in step t's batch."""
    curr = as_curriculum(curriculum, n_train=n_train)
    return batching_matrix(curr.reshape(-1, curr.shape[-1]), n_train).toarray()


def design_matrix(curriculum: ArrayLike, loss_before: ArrayLike, n_train: int) -> NDArray[np.float64]:
    """The (S, 2n) design ``X = [diag(L_before) Q, Q]`` of Appendix A.1 for one test example.

    Args:
        curriculum: (S, b) batches of the observed steps.
        loss_before: (S,) the test example's loss before each step.
        n_train: n.
    """
    q = batching_matrix_of(curriculum, n_train)
    before = np.asarray(loss_before, dtype=np.float64).ravel()
    if before.shape[0] != q.shape[0]:
        raise ValueError(f"loss_before has {before.shape[0]} entries but the curriculum has {q.shape[0]} steps")
    return np.hstack([before[:, None] * q, q])


@dataclass(frozen=True)
class IdentifiabilityReport:
    """What a set of observed steps tells Simfluence-Linear about one test example at lambda = 0 (Appendix A.2).

    Attributes:
        n_train: n.
        n_steps: Observed steps S.
        counts: (n,) observed steps containing each training example.
        enough_steps: Condition 1: S >= 2n.
        seen_twice: Condition 2: every example observed in at least two steps.
        loss_moves: Condition 3: the loss is not constant over the observed steps.
        rank: Rank of the (S, 2n) design; the solution is unique iff it equals 2n.
        unidentified: Training examples whose A or B is not determined by the data (touched by the design's null
            space), sorted.
    """

    n_train: int
    n_steps: int
    counts: NDArray[np.int64]
    enough_steps: bool
    seen_twice: bool
    loss_moves: bool
    rank: int
    unidentified: NDArray[np.int64]

    @property
    def unique(self) -> bool:
        """Whether lambda = 0 has a unique solution (full column rank)."""
        return self.rank == 2 * self.n_train


def identifiability(
    curriculum: ArrayLike, loss_before: ArrayLike, n_train: int, *, rtol: float = 1e-9
) -> IdentifiabilityReport:
    """Check the three conditions of Appendix A.2 and compute the design's rank and unidentified examples.

    Uses a dense SVD of the (S, 2n) design, affordable up to n of a few thousand.

    Args:
        curriculum: (S, b) batches of the observed steps (stack several runs' curricula along axis 0).
        loss_before: (S,) one test example's loss before each observed step.
        n_train: n.
        rtol: Singular values below ``rtol`` times the largest count as zero.
    """
    curr = as_curriculum(curriculum, n_train=n_train)
    curr = curr.reshape(-1, curr.shape[-1])
    x = design_matrix(curr, loss_before, n_train)
    _, sv, vt = np.linalg.svd(x, full_matrices=True)
    cutoff = rtol * (sv[0] if sv.size else 0.0)
    rank = int((sv > cutoff).sum())
    null = vt[rank:]  # (2n - rank, 2n): basis of the null space
    touched = (null[:, :n_train] ** 2).sum(0) + (null[:, n_train:] ** 2).sum(0)
    counts = observation_counts(curr, n_train)
    before = np.asarray(loss_before, dtype=np.float64).ravel()
    return IdentifiabilityReport(
        n_train=n_train,
        n_steps=int(curr.shape[0]),
        counts=counts,
        enough_steps=curr.shape[0] >= 2 * n_train,
        seen_twice=bool((counts >= 2).all()),
        loss_moves=bool(np.ptp(before) > 0) if before.size else False,
        rank=rank,
        unidentified=np.flatnonzero(touched > 1e-12).astype(np.int64),
    )


def runs_needed(n_train: int, steps_per_run: int, *, multiples: Sequence[float] = (2, 20, 60)) -> dict[float, int]:
    """Runs of ``steps_per_run`` observed steps needed to observe ``k * n`` steps, for each k in ``multiples``.

    §3.3: 2n steps are the bare minimum for a unique solution; the paper finds 20n to 60n more than sufficient.
    """
    if steps_per_run < 1:
        raise ValueError(f"steps_per_run must be >= 1, got {steps_per_run}")
    return {k: math.ceil(k * n_train / steps_per_run) for k in multiples}


# Counterfactual edits --------------------------------------------------------------------------------------------
def _flat(curriculum: ArrayLike) -> tuple[NDArray[np.int64], int]:
    curr = as_curriculum(curriculum)
    if curr.ndim != 2:
        raise ValueError(f"expected one (T, b) curriculum, got shape {curr.shape}")
    flat = curr.ravel()
    return flat[flat != PAD], int(curr.shape[1])


def remove(curriculum: ArrayLike, group: ArrayLike, *, repack: bool = True) -> NDArray[np.int64]:
    """ "What if I had removed group X from my training data?": drop every occurrence of the group's examples.

    Args:
        curriculum: (T, b).
        group: Training-example indices to remove.
        repack: If True (the default, as re-running training on the smaller data set would), the remaining
            examples keep their order and are re-cut into full batches, so the run gets shorter. If False, each
            step keeps its position and removed slots become -1 padding (empty steps are kept).
    """
    curr = as_curriculum(curriculum)
    drop = np.isin(curr, np.asarray(group, dtype=np.int64))
    if not repack:
        return np.where(drop, PAD, curr)
    flat, b = _flat(np.where(drop, PAD, curr))
    return rebatch(flat, b)


def order_groups(curriculum: ArrayLike, groups: Sequence[ArrayLike]) -> NDArray[np.int64]:
    """ "What if I had trained on Y first, then X?": reorder occurrences so that earlier groups come first.

    The flat sequence of consumed examples is stably sorted by the rank of the group each example belongs to
    (``groups[0]`` first); examples in no group come last, in their original order. The result is re-cut into
    batches of the same size, so the number of steps is unchanged.
    """
    flat, b = _flat(curriculum)
    rank = np.full(flat.shape, len(groups), dtype=np.int64)
    for k in reversed(range(len(groups))):
        rank[np.isin(flat, np.asarray(groups[k], dtype=np.int64))] = k
    return rebatch(flat[np.argsort(rank, kind="stable")], b)


def duplicate(curriculum: ArrayLike, example: int, times: int, *, seed: int | None = None) -> NDArray[np.int64]:
    """ "What if I duplicated example Z ten times?": every occurrence of ``example`` becomes ``times`` copies.

    Args:
        curriculum: (T, b).
        example: Training-example index.
        times: Total copies per occurrence (``times=10`` adds nine).
        seed: If None, the copies follow the original occurrence directly; otherwise the added copies are placed
            at uniformly random positions of the sequence (as duplicating in the data set and reshuffling would).

    Returns:
        The edited curriculum, re-cut into batches of the same size (longer by the added copies).
    """
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    flat, b = _flat(curriculum)
    hits = np.flatnonzero(flat == example)
    if hits.size == 0:
        raise ValueError(f"example {example} does not occur in the curriculum")
    if seed is None:
        reps = np.where(flat == example, times, 1)
        return rebatch(np.repeat(flat, reps), b)
    rng = np.random.default_rng(seed)
    extra = hits.size * (times - 1)
    out = flat.tolist()
    for pos in sorted(rng.integers(0, len(flat) + 1, size=extra).tolist(), reverse=True):
        out.insert(pos, example)
    return rebatch(np.array(out, dtype=np.int64), b)


def swap_steps(curriculum: ArrayLike, step_a: int, step_b: int) -> NDArray[np.int64]:
    """Exchange the batches of steps ``step_a`` and ``step_b`` (numbered from 1, as in the paper)."""
    curr = as_curriculum(curriculum).copy()
    T = curr.shape[0]
    for step in (step_a, step_b):
        if not 1 <= step <= T:
            raise ValueError(f"step {step} is out of range: steps are numbered 1..{T}")
    curr[[step_a - 1, step_b - 1]] = curr[[step_b - 1, step_a - 1]]
    return curr
