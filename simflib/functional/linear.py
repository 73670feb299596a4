"""The Simfluence-Linear model as pure functions: fitting (Eq. 2-4 and Appendix A.1) and simulation (Eq. 1).

Notation (Guu et al. 2023):

* ``n`` training examples, ``m`` test examples, batch size ``b``.
* An *observation* is one training step: the batch ``c`` (``b`` indices, ``-1`` padding), the losses of the m
  test examples before the step, ``L_before`` (m,), and after it, ``L_after`` (m,).
* For test example ``j`` the model predicts ``L_after[j] = alpha_j(c) * L_before[j] + beta_j(c)`` with
  ``alpha_j(c) = sum_{i in c} A[j, i]`` (multiplicative influence) and ``beta_j(c) = sum_{i in c} B[j, i]``
  (additive influence). The ablations fix ``alpha == 1`` (additive) or ``beta == 0`` (multiplicative).

Fitting minimises, independently for every test example ``j``,
``sum_s (L_after[s, j] - prediction[s, j]) ** 2 + l2 * (||A[j]||^2 + ||B[j]||^2)``
exactly (no SGD). The normal equations of all ``m`` test examples share the sparse batching matrix ``Q`` (S, n),
so they are solved together by conjugate gradients on an (n, 2m) block of unknowns, preconditioned by the exact
inverse of each training example's own 2 x 2 block of the normal matrix. With batch size 1 that block-diagonal
preconditioner *is* the inverse, so the solve finishes in one step; for larger batches a few dozen iterations
reach machine-precision agreement with the dense ridge solution.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from simflib._validation import PAD, as_curriculum, as_losses, pad_batches

Variant = Literal["linear", "additive", "multiplicative"]
VARIANTS: tuple[Variant, ...] = ("linear", "additive", "multiplicative")


class UnidentifiableError(ValueError):
    """The observations do not determine the requested parameters (Appendix A.2)."""


@dataclass(frozen=True)
class Observations:
    """One-step observations ``(batch, L_before, L_after)`` that a simulator is fitted to.

    They need not be consecutive steps of a run: the baselines pass *hypothetical* losses (Eq. 10-11).

    Attributes:
        batches: (S, b) int64, training-example indices of each observed step, ``-1`` padding.
        loss_before: (S, m) float64, test losses before each step.
        loss_after: (S, m) float64, test losses after each step.
        n_train: Size of the training pool.
    """

    batches: NDArray[np.int64]
    loss_before: NDArray[np.float64]
    loss_after: NDArray[np.float64]
    n_train: int
    _q: sp.csr_matrix | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, batches: ArrayLike, loss_before: ArrayLike, loss_after: ArrayLike, *, n_train: int) -> Observations:
        """Validate and build observations.

        Args:
            batches: (S, b) training-example indices, ``-1`` padding.
            loss_before: (S, m) losses before each step.
            loss_after: (S, m) losses after each step.
            n_train: Size of the training pool.

        Raises:
            ValueError: On shape mismatches, out-of-range indices or non-finite losses.
        """
        if int(n_train) < 1:
            raise ValueError(f"n_train must be a positive integer, got {n_train}")
        batches = as_curriculum(batches, n_train=n_train, where="observations: batches")
        before = as_losses(loss_before, where="observations: loss_before")
        after = as_losses(loss_after, where="observations: loss_after")
        if batches.ndim != 2 or before.ndim != 2:
            raise ValueError(
                f"observations: batches must be (S, b) and losses (S, m); got {batches.shape} and {before.shape}"
            )
        if before.shape != after.shape:
            raise ValueError(f"observations: loss_before {before.shape} and loss_after {after.shape} differ in shape")
        if before.shape[0] != batches.shape[0]:
            raise ValueError(f"observations: {batches.shape[0]} batches but {before.shape[0]} rows of losses")
        if batches.shape[0] == 0:
            raise ValueError("observations: no observed steps")
        return cls(batches, before, after, int(n_train))

    @classmethod
    def concatenate(cls, parts: list[Observations]) -> Observations:
        """Stack observations over one pool and the same test examples (batches padded to a common b)."""
        if not parts:
            raise ValueError("observations: nothing to concatenate")
        n_train = parts[0].n_train
        m = parts[0].m
        for k, part in enumerate(parts):
            if part.n_train != n_train or part.m != m:
                raise ValueError(
                    f"observations part {k}: n_train={part.n_train}, m={part.m} "
                    f"differ from part 0 (n_train={n_train}, m={m})"
                )
        b = max(part.batches.shape[1] for part in parts)
        batches = np.concatenate([pad_batches(part.batches, b) for part in parts])
        return cls(
            batches,
            np.concatenate([part.loss_before for part in parts]),
            np.concatenate([part.loss_after for part in parts]),
            n_train,
        )

    @property
    def m(self) -> int:
        """Number of test examples."""
        return int(self.loss_before.shape[1])

    @property
    def n_steps(self) -> int:
        """Number of observed steps S."""
        return int(self.batches.shape[0])

    @property
    def batching_matrix(self) -> sp.csr_matrix:
        """Sparse (S, n) matrix ``Q``: ``Q[s, i]`` counts how often example i is in the batch of step s."""
        if self._q is None:
            object.__setattr__(self, "_q", batching_matrix(self.batches, self.n_train))
        assert self._q is not None
        return self._q


def batching_matrix(batches: NDArray[np.int64], n_train: int) -> sp.csr_matrix:
    """Sparse (S, n) count matrix of a stack of batches (the matrix ``Q`` of Appendix A.2).

    Args:
        batches: (S, b) indices, ``-1`` padding.
        n_train: Number of columns n.

    Returns:
        CSR matrix with ``Q[s, i]`` = number of times example i appears in batch s.
    """
    rows = np.repeat(np.arange(batches.shape[0]), batches.shape[1])
    cols = batches.ravel()
    keep = cols != PAD
    q = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(batches.shape[0], n_train))
    q.sum_duplicates()
    return q


def observation_counts(batches: ArrayLike, n_train: int) -> NDArray[np.int64]:
    """Number of observed steps whose batch contains each training example.

    Args:
        batches: (..., b) indices, ``-1`` padding (any leading shape: a run, a stack of runs).
        n_train: Size of the pool.

    Returns:
        (n,) int64 counts (a step containing an example twice counts once).
    """
    arr = as_curriculum(np.asarray(batches).reshape(-1, np.shape(batches)[-1]), n_train=n_train)
    q = batching_matrix(arr, n_train)
    return np.asarray((q > 0).sum(axis=0)).ravel().astype(np.int64)


@dataclass(frozen=True)
class LinearFit:
    """Result of :func:`fit_linear`.

    Attributes:
        A: (m, n) multiplicative influence, or ``None`` for the additive variant (alpha == 1).
        B: (m, n) additive influence, or ``None`` for the multiplicative variant (beta == 0).
        counts: (n,) number of observed steps containing each training example.
        iterations: Conjugate-gradient iterations used.
        residual: Largest relative residual of the normal equations over test examples.
    """

    A: NDArray[np.float64] | None
    B: NDArray[np.float64] | None
    counts: NDArray[np.int64]
    iterations: int
    residual: float


def fit_linear(
    obs: Observations,
    *,
    l2: float,
    variant: Variant = "linear",
    tol: float = 1e-12,
    max_iter: int = 2000,
    x0: tuple[NDArray[np.float64] | None, NDArray[np.float64] | None] | None = None,
    chunk_size: int = 16,
    workers: int | None = None,
) -> LinearFit:
    """Fit Simfluence-Linear (or an ablation) to observations by exact ridge regression.

    Minimises Eq. 2 of the paper for every test example:
    ``sum_s (L_after - alpha(c_s) L_before - beta(c_s))^2 + l2 (||A||^2 + ||B||^2)``.
    Test examples are independent problems; they are solved in chunks of ``chunk_size`` columns (small enough
    for the sparse products to stay in cache), spread over ``workers`` threads.

    Args:
        obs: Observed steps.
        l2: lambda of Eq. 2 (a sum over steps, not a mean); ``0`` is allowed when every parameter is identified.
        variant: ``"linear"`` (A and B), ``"additive"`` (alpha == 1, only B) or ``"multiplicative"``
            (beta == 0, only A).
        tol: Stop when every test example's normal-equation residual, relative to its right-hand side,
            is below ``tol``.
        max_iter: Conjugate-gradient iteration limit per chunk.
        x0: Optional warm start ``(A, B)`` of shapes (m, n) (e.g. the fit at a neighbouring lambda).
        chunk_size: Test examples solved together.
        workers: Threads; default ``os.cpu_count()``.

    Returns:
        The fitted parameters, each (m, n).

    Raises:
        ValueError: On a negative ``l2``, an unknown variant, or no convergence within ``max_iter``.
        UnidentifiableError: With ``l2 == 0``, when some training example's parameters are not determined
            (never observed, observed once, or the test loss never moves), naming the examples.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not np.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    q = obs.batching_matrix
    qt = q.T.tocsr()
    qt2 = qt.multiply(qt).tocsr()
    n, m = obs.n_train, obs.m
    counts = np.asarray((q > 0).sum(axis=0)).ravel().astype(np.int64)
    d = obs.loss_before
    # Diagonal 2x2 blocks of the normal matrix per (example i, test j): [[saa, sab], [sab, sbb]].
    sbb = np.broadcast_to((qt2 @ np.ones(q.shape[0]))[:, None] + l2, (n, m))
    saa = qt2 @ (d * d) + l2 if variant != "additive" else None
    sab = qt2 @ d if variant == "linear" else None
    if l2 == 0:
        _check_identified(saa, sab, sbb, counts, variant)
    # Examples never observed have the block l2 * I; with l2 == 0 they were rejected above.
    inverse: tuple[NDArray, ...]
    if variant == "linear":
        assert saa is not None and sab is not None
        det = saa * sbb - sab * sab
        inverse = (sbb / det, -sab / det, saa / det)
    elif variant == "multiplicative":
        assert saa is not None
        inverse = (1.0 / saa,)
    else:
        inverse = (1.0 / sbb,)
    y = obs.loss_after - d if variant == "additive" else obs.loss_after
    start_a, start_b = x0 if x0 is not None else (None, None)
    starts = {"linear": (start_a, start_b), "additive": (start_b,), "multiplicative": (start_a,)}[variant]

    def solve(cols: slice) -> tuple[NDArray, int, float]:
        c = cols.stop - cols.start
        init = np.concatenate(
            [np.zeros((n, c)) if s is None else np.asarray(s, dtype=np.float64)[cols].T for s in starts],
            axis=1,
        )
        system = _ChunkSystem(q, qt, d[:, cols], y[:, cols], tuple(p[:, cols] for p in inverse), l2, variant)
        return system.solve(init, tol=tol, max_iter=max_iter)

    chunks = [slice(k, min(k + chunk_size, m)) for k in range(0, m, chunk_size)]
    n_workers = min(workers or os.cpu_count() or 1, len(chunks))
    if n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            results = list(pool.map(solve, chunks))
    else:
        results = [solve(cols) for cols in chunks]
    solution = np.empty((m, n, len(starts)))
    for cols, (x, _, _) in zip(chunks, results):
        solution[cols] = x.reshape(n, len(starts), -1).transpose(2, 0, 1)
    residual = max(res for _, _, res in results)
    if not residual <= tol:
        raise ValueError(
            f"fit_linear: conjugate gradients did not reach tol={tol} in {max_iter} iterations "
            f"(relative residual {residual:.2e}); the problem is nearly singular: increase l2"
        )
    return LinearFit(
        A=solution[..., 0].copy() if variant != "additive" else None,
        B=solution[..., -1].copy() if variant != "multiplicative" else None,
        counts=counts,
        iterations=max(it for _, it, _ in results),
        residual=residual,
    )


class _ChunkSystem:
    """Normal equations of a chunk of c test examples; unknowns stored as one (n, w * c) array.

    ``w`` is 2 for the linear variant (columns ``[:c]`` hold A, ``[c:]`` hold B) and 1 for the ablations.
    """

    def __init__(self, q, qt, d, y, inverse, l2: float, variant: Variant) -> None:
        self.q, self.qt, self.l2, self.variant = q, qt, l2, variant
        self.d = np.ascontiguousarray(d)
        self.c = d.shape[1]
        self.inverse = tuple(np.ascontiguousarray(p) for p in inverse)
        if variant == "linear":
            self.rhs = qt @ np.concatenate([self.d * y, y], axis=1)
        elif variant == "multiplicative":
            self.d2 = self.d * self.d
            self.rhs = qt @ (self.d * y)
        else:
            self.rhs = qt @ np.ascontiguousarray(y)

    def apply(self, x: NDArray) -> NDArray:
        """(X^T X + l2 I) x, with X the design of Appendix A.1."""
        fwd = self.q @ x
        if self.variant == "linear":
            c = self.c
            pred = self.d * fwd[:, :c] + fwd[:, c:]
            np.multiply(self.d, pred, out=fwd[:, :c])
            fwd[:, c:] = pred
        elif self.variant == "multiplicative":
            fwd *= self.d2
        out = self.qt @ fwd
        out += self.l2 * x
        return out

    def precondition(self, r: NDArray) -> NDArray:
        """Apply the inverse of each example's own 2x2 (or 1x1) diagonal block."""
        if self.variant != "linear":
            return self.inverse[0] * r
        c = self.c
        pa, pb, pc = self.inverse
        ra, rb = r[:, :c], r[:, c:]
        z = np.empty_like(r)
        z[:, :c] = pa * ra + pb * rb
        z[:, c:] = pb * ra + pc * rb
        return z

    def column_dot(self, u: NDArray, v: NDArray) -> NDArray:
        """Per-test-example inner product over all of its unknowns: (c,)."""
        return np.einsum("ij,ij->j", u, v).reshape(-1, self.c).sum(axis=0)

    def solve(self, x: NDArray, *, tol: float, max_iter: int) -> tuple[NDArray, int, float]:
        """Preconditioned conjugate gradients, one independent system per test example, all at once."""
        w = x.shape[1] // self.c
        norm_rhs = np.sqrt(self.column_dot(self.rhs, self.rhs))
        norm_rhs[norm_rhs == 0] = 1.0
        r = self.rhs - self.apply(x)
        z = self.precondition(r)
        p = z.copy()
        rz = self.column_dot(r, z)
        res = np.sqrt(self.column_dot(r, r)) / norm_rhs
        it = 0
        while res.max() > tol and it < max_iter:
            ap = self.apply(p)
            pap = self.column_dot(p, ap)
            active = (res > tol) & (pap > 0)
            step = np.tile(np.where(active, rz / np.where(active, pap, 1.0), 0.0), w)
            x += step * p
            r -= step * ap
            res = np.sqrt(self.column_dot(r, r)) / norm_rhs
            z = self.precondition(r)
            rz_new = self.column_dot(r, z)
            beta = np.where(active & (rz > 0), rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            p = z + np.tile(beta, w) * p
            rz = rz_new
            it += 1
        return x, it, float(res.max())


def _check_identified(saa, sab, sbb, counts, variant: Variant) -> None:
    """With l2 == 0, reject examples whose own 2x2 block is singular (necessary for a unique solution)."""
    if variant == "linear":
        det = saa * sbb - sab * sab
        scale = np.maximum(saa * sbb, np.finfo(float).tiny)
        singular = det <= 1e-12 * scale
    elif variant == "multiplicative":
        singular = saa <= 0
    else:
        singular = sbb <= 0
    bad = np.flatnonzero(singular.any(axis=1))
    if bad.size:
        worst = bad[:10].tolist()
        reasons = []
        for i in worst:
            if counts[i] == 0:
                reasons.append(f"{i} (never observed)")
            elif counts[i] == 1 and variant == "linear":
                reasons.append(f"{i} (observed in only 1 step; A.2 needs 2)")
            else:
                js = np.flatnonzero(singular[i])[:3].tolist()
                reasons.append(f"{i} (test loss constant across its steps for test examples {js})")
        more = f" and {bad.size - len(worst)} more" if bad.size > len(worst) else ""
        raise UnidentifiableError(
            f"with l2=0 the {variant} simulator is not identified for training examples "
            f"{', '.join(reasons)}{more}; use l2 > 0 or observe more steps (Appendix A.2)"
        )


def simulate_linear(
    curricula: ArrayLike,
    initial_loss: ArrayLike,
    *,
    A: NDArray[np.float64] | None,
    B: NDArray[np.float64] | None,
    chunk_size: int = 128,
    workers: int | None = None,
) -> NDArray[np.float64]:
    """Roll Eq. 1 forward: ``L_t = alpha(c_t) L_{t-1} + beta(c_t)`` for every test example and curriculum.

    A step whose batch is all padding consumed no example and trains nothing: ``L_t = L_{t-1}`` there (Eq. 1 with
    empty sums would set the loss to 0). Such steps carry no information for fitting either: their rows of the
    batching matrix are zero, so they add nothing to the normal equations.

    Args:
        curricula: (T, b) one curriculum or (K, T, b) a stack; ``-1`` pads short batches.
        initial_loss: (m,) losses before training, shared by all curricula, or (K, m) one row per curriculum.
        A: (m, n) multiplicative influence, or ``None`` for alpha == 1.
        B: (m, n) additive influence, or ``None`` for beta == 0.
        chunk_size: Curricula simulated together (sized so a chunk's coefficients stay in cache; the result
            does not depend on it).
        workers: Threads; default ``os.cpu_count()``.

    Returns:
        (T + 1, m) or (K, T + 1, m) simulated trajectories; index 0 holds ``initial_loss``. The stacked result
        is a view of a step-major array (each step is written contiguously); copy it if you need C order.

    Raises:
        ValueError: On inconsistent shapes or out-of-range indices.
    """
    if A is None and B is None:
        raise ValueError("simulate_linear: at least one of A and B is needed")
    ref = A if A is not None else B
    assert ref is not None
    if ref.ndim != 2:
        raise ValueError(f"simulate_linear: A/B must have shape (m, n), got {ref.shape}")
    m, n = ref.shape
    if A is not None and B is not None and A.shape != B.shape:
        raise ValueError(f"A {A.shape} and B {B.shape} must have the same shape (m, n)")
    curr = as_curriculum(curricula, n_train=n)
    single = curr.ndim == 2
    if single:
        curr = curr[None]
    if curr.ndim != 3:
        raise ValueError(f"curricula: expected shape (T, b) or (K, T, b), got {np.shape(curricula)}")
    K, T, b = curr.shape
    l0 = np.asarray(initial_loss, dtype=np.float64)
    if l0.shape not in ((m,), (K, m)):
        raise ValueError(f"initial_loss: expected shape ({m},) or ({K}, {m}) to match A/B with m={m}, got {l0.shape}")
    l0 = as_losses(np.broadcast_to(l0, (K, m)), where="initial_loss")
    # One table [A^T | B^T] with a zero row for padding: a gather gives alpha and beta together.
    parts = [p for p in (A, B) if p is not None]
    table = np.zeros((n + 1, len(parts) * m))
    for k, part in enumerate(parts):
        table[:n, k * m : (k + 1) * m] = part.T
    steps = np.ascontiguousarray(np.where(curr == PAD, n, curr).transpose(1, 2, 0))  # (T, b, K)
    empty = (steps == n).all(axis=1)  # (T, K): a step that consumed no example trains nothing
    out = np.empty((T + 1, K, m))
    out[0] = l0

    def run(start: int) -> None:
        stop = min(start + chunk_size, K)
        loss = l0[start:stop].copy()
        for t in range(T):
            coef = table[steps[t, 0, start:stop]]
            for pos in range(1, b):
                coef += table[steps[t, pos, start:stop]]
            skip = empty[t, start:stop]
            before = loss[skip].copy() if skip.any() else None
            if A is not None:
                loss *= coef[:, :m]
            if B is not None:
                loss += coef[:, -m:]
            if before is not None:
                loss[skip] = before
            out[t + 1, start:stop] = loss

    starts = range(0, K, chunk_size)
    n_workers = min(workers or os.cpu_count() or 1, len(starts))
    if n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(run, starts))
    else:
        for start in starts:
            run(start)
    trajectories = out.transpose(1, 0, 2)
    return trajectories[0] if single else trajectories
