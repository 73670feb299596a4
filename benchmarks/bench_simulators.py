"""Fitting every registered simulator on one committed setting, timed against Simfluence-Linear in the same process.

Each simulator is fitted the way the book fits it: on the setting's first 20 runs, choosing its hyperparameters on
runs 20-21 (its whole validation grid is part of the time). The baseline of the ratios is Simfluence-Linear's fit
with its lambda grid. GPTfluence trains a network by gradient steps, so its time is given for the number of steps
the book uses. Target (the issue that added the featurized simulators): every fit in minutes at most on 2 cores,
i.e. under ``--limit`` seconds (default 300).

Run: ``python benchmarks/bench_simulators.py [--setting boolq-minilm-ia3] [--gptfluence-steps 600]``. Exits 1 if a
fit exceeds the limit. Needs the setting's committed runs and features (``data/features``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import simflib as sf
from simflib.collect import load_collected
from simflib.experiments import build
from simflib.features import load_features

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="boolq-minilm-ia3")
    parser.add_argument("--gptfluence-steps", type=int, default=600)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds a fit may take")
    args = parser.parse_args()
    folder = ROOT / "data" / "runs" / args.setting
    runs = load_collected(folder, n_runs=32)
    fit, val = runs[:20], runs[20:22]
    features = load_features(folder)
    print(f"{args.setting}: n={runs.n_train}, m={runs.m}, T={runs[0].n_steps}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    seconds = {}
    for name in sf.SIMULATORS:
        sim = build(name, runs.n_train, features=features, max_steps=args.gptfluence_steps)
        start = time.perf_counter()
        sim.fit(fit, val=val)
        seconds[sim.label] = time.perf_counter() - start
    base = seconds[sf.SimfluenceLinear.label]
    ok = True
    for label, s in seconds.items():
        over = s > args.limit
        ok &= not over
        print(f"  {label:28s} {s:8.2f} s  {s / base:7.2f} x Simfluence-Linear" + ("  OVER THE LIMIT" if over else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
