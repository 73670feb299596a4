"""The curriculum-blind baseline and the LDS on the committed runs, against an independent computation.

Independent means: plain loops over runs and test examples, scipy's Spearman, and no simflib metric or simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import simflib as sf
from simflib.collect import load_collected

DATA = Path(__file__).resolve().parents[1] / "data" / "runs"


@pytest.fixture(scope="module")
def split():
    folder = DATA / "boolq-minilm-ia3"
    if not (folder / "config.json").is_file():
        pytest.skip("no committed runs in this checkout")
    return load_collected(folder, n_runs=sum(sf.PAPER_SPLIT)).split(seed=0)


def test_baseline_mse_on_committed_runs_matches_a_loop(split):
    fit, _, held_out = split
    frame = sf.evaluate(sf.MeanTrajectory(fit.n_train).fit(fit), held_out)
    T, m = held_out[0].losses.shape
    for k, run in enumerate(held_out):
        total = 0.0
        for t in range(1, T):
            for j in range(m):
                mean_change = sum(r.losses[t, j] - r.losses[0, j] for r in fit) / len(fit)
                total += (run.losses[0, j] + mean_change - run.losses[t, j]) ** 2
        assert frame["all_steps_mse"].iloc[k] == pytest.approx(total / ((T - 1) * m), rel=1e-12, abs=0)


def test_lds_on_committed_runs_matches_scipy(split):
    fit, val, held_out = split
    sim = sf.SimfluenceLinear(fit.n_train).fit(fit, val=val)
    frame = sf.evaluate(sim, held_out)
    finals = np.array([sim.simulate(r.curriculum, r.initial_loss)[-1] for r in held_out])
    observed = np.array([r.losses[-1] for r in held_out])
    rhos = [spearmanr(finals[:, j], observed[:, j]).statistic for j in range(observed.shape[1])]
    assert frame["final_step_lds"].iloc[0] == pytest.approx(np.mean(rhos), abs=1e-12)
    assert frame["lds_skipped"].iloc[0] == 0
