"""Speed of the core: fitting Simfluence-Linear and simulating many curricula.

Every timing is set beside a baseline measured in the same process, and every fast answer is checked against
an exact one, so the printed ratios compare equal work at equal accuracy.

1. Fit: the paper's many-shot scale (pool 1536, 20 runs x 384 steps, batch 4) with m = 100 test examples.
   simflib's fit vs scikit-learn's ``Ridge(tol=1e-10)`` fitted per test example on the same sparse design
   (built before timing starts), both checked against the exact ridge solution from a dense solve of the
   normal equations. The two tolerances are not the same measure of accuracy, so simflib runs at several
   tolerances and the speed-up is judged at equal accuracy: the loosest simflib tolerance whose answer is at
   least as close to the exact one as scikit-learn's. Targets: under 1 s and agreement to 1e-6 at simflib's
   default tol=1e-10; at least 10x faster than scikit-learn at equal accuracy.
2. Simulate: 10,000 few-shot curricula x 64 steps x 100 test examples. Baseline: a plain NumPy loop over
   curricula and steps (vectorised over test examples), timed on a subset and scaled. Target: under 1 s.

Run: ``make bench`` or ``python benchmarks/bench_core.py [--quick]``. Exits 1 if a target is missed.
Synthetic losses drift slowly downwards with noise, like fine-tuning losses (see ``simflib.synthetic``);
a slowly moving loss is what makes the unpreconditioned problem ill-conditioned (Appendix A.2, condition 3).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import scipy.sparse as sp

import simflib as sf
from simflib import curriculum
from simflib.functional import fit_linear, simulate_linear
from simflib.simulators.base import observations


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_fit(*, m: int, n_exact: int, l2: float) -> list[tuple[str, bool]]:
    n, runs_n, sk_tol = 1536, 20, 1e-10
    curr = curriculum.protocol(runs_n, seed=0, n_train=n, subset_size=1024, epochs=1.5, batch_size=4)
    truth = sf.synthetic.markov_truth(n, m, batch_size=4, seed=1)
    runs = sf.synthetic.markov_runs(truth, curr, noise=0.003, seed=2)
    obs = observations(runs)
    print(f"fit: n={n}, {runs_n} runs x {curr.shape[1]} steps = {obs.n_steps} observed steps, b=4, m={m}, "
          f"lambda={l2}")

    from sklearn.linear_model import Ridge

    q = obs.batching_matrix
    designs = [sp.hstack([q.multiply(obs.loss_before[:, [j]]), q]).tocsr() for j in range(m)]
    exact = []
    for j in range(n_exact):
        x = designs[j]
        exact.append(np.linalg.solve((x.T @ x).toarray() + l2 * np.eye(2 * n), x.T @ obs.loss_after[:, j]))

    def error(coef: np.ndarray) -> float:
        """Largest relative deviation from the exact ridge solution over the checked test examples."""
        return max(np.abs(coef[j] - exact[j]).max() / np.abs(exact[j]).max() for j in range(n_exact))

    start = time.perf_counter()
    sk = np.stack(
        [Ridge(alpha=l2, fit_intercept=False, tol=sk_tol).fit(designs[j], obs.loss_after[:, j]).coef_ for j in range(m)]
    )
    t_sk, sk_err = time.perf_counter() - start, error(sk)
    print(f"  scikit-learn Ridge(tol={sk_tol}) x {m}: {t_sk:.3f} s, max relative error vs exact {sk_err:.1e}")
    print(f"  {'simflib tol':>13} {'time (s)':>9} {'CG its':>7} {'error':>9} {'speed-up':>9}")
    rows = {}
    for tol in (1e-8, 3e-9, 1e-9, 3e-10, 1e-10):
        t, fit = timed(lambda: fit_linear(obs, l2=l2, tol=tol))
        err = error(np.concatenate([fit.A, fit.B], axis=1))
        rows[tol] = (t, err)
        print(f"  {tol:>13.0e} {t:9.3f} {fit.iterations:7d} {err:9.1e} {t_sk / t:8.1f}x")
    # Equal accuracy: the loosest simflib tolerance whose answer is at least as close to the exact one.
    matched = max((tol for tol, (_, err) in rows.items() if err <= sk_err), default=min(rows))
    t_matched, err_matched = rows[matched]
    print(f"  at equal accuracy (simflib tol={matched:.0e}, error {err_matched:.1e} <= {sk_err:.1e}): "
          f"{t_sk / t_matched:.1f}x faster; at equal tolerance (1e-10): {t_sk / rows[1e-10][0]:.1f}x")
    return [
        ("fit under 1 s (tol=1e-10)", rows[1e-10][0] < 1.0),
        ("fit >= 10x faster than scikit-learn at equal accuracy", t_sk / t_matched >= 10),
        ("fit agrees with exact ridge to 1e-6 (tol=1e-10)", rows[1e-10][1] < 1e-6),
    ]


def bench_simulate(*, K: int, m: int, baseline_k: int) -> list[tuple[str, bool]]:
    n, b = 100, 4
    rng = np.random.default_rng(0)
    curr = np.stack([curriculum.few_shot(seed=rng) for _ in range(K)])
    truth = sf.synthetic.markov_truth(n, m, batch_size=b, seed=3)
    print(f"simulate: {K} curricula x {curr.shape[1]} steps x {m} test examples (pool {n}, b={b})")
    t_ours, out = timed(lambda: simulate_linear(curr, truth.initial_loss, A=truth.A, B=truth.B))

    def loop(k: int) -> np.ndarray:
        res = np.empty((k, curr.shape[1] + 1, m))
        for c in range(k):
            loss = truth.initial_loss.copy()
            res[c, 0] = loss
            for t, batch in enumerate(curr[c]):
                loss = truth.A[:, batch].sum(axis=1) * loss + truth.B[:, batch].sum(axis=1)
                res[c, t + 1] = loss
        return res

    t_loop, ref = timed(lambda: loop(baseline_k), repeat=1)
    t_loop_all = t_loop * K / baseline_k
    err = np.abs(out[:baseline_k] - ref).max()
    print(f"  simflib simulate_linear   {t_ours:8.3f} s")
    print(f"  NumPy loop (scaled from {baseline_k}) {t_loop_all:8.3f} s")
    print(f"  speed-up                  {t_loop_all / t_ours:8.1f} x   (max difference {err:.1e})")
    return [("simulate under 1 s", t_ours < 1.0), ("simulate equals the loop", err < 1e-12)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; targets not judged)")
    args = parser.parse_args()
    print(f"simflib {sf.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores\n")
    if args.quick:
        checks = bench_fit(m=10, n_exact=1, l2=1e-3) + bench_simulate(K=500, m=10, baseline_k=50)
    else:
        checks = bench_fit(m=100, n_exact=5, l2=1e-3) + bench_simulate(K=10_000, m=100, baseline_k=300)
    print()
    for name, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")
    return 0 if args.quick or all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
