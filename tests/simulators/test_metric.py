"""Simulating a bounded metric with any simulator: the spaces, the choice on validation runs, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from simflib import RunSet
from simflib.experiments import score_registered
from simflib.functional.metrics import all_steps_mse
from simflib.runs import Run
from simflib.simulators import MeanTrajectory, OnMetric
from simflib.simulators.metric import from_space, to_space


def _runs(n_runs: int = 8, n_train: int = 12, T: int = 6, m: int = 3, seed: int = 0) -> RunSet:
    """Runs whose 'p' metric rises towards 1 by amounts that depend on the batch (in logit space)."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.3, 0.2, size=(n_train, m))
    out = []
    for _ in range(n_runs):
        curriculum = rng.integers(0, n_train, size=(T, 2))
        logit = np.empty((T + 1, m))
        logit[0] = rng.normal(-1, 0.3, size=m)
        for t in range(T):
            logit[t + 1] = logit[t] + effect[curriculum[t]].sum(0)
        p = 1 / (1 + np.exp(-logit))
        out.append(Run(curriculum, -np.log(p), metrics={"p": p, "hit": (p > 0.5).astype(float)}))
    return RunSet(out, n_train)


def test_spaces_invert_each_other_within_the_bounds():
    v = np.array([0.0, 0.2, 0.5, 1.0])
    np.testing.assert_allclose(from_space(to_space(v, "logit", eps=0.01), "logit"), np.clip(v, 0.01, 0.99))
    np.testing.assert_array_equal(from_space(to_space(v, "clip"), "clip"), v)
    np.testing.assert_array_equal(from_space(np.array([-0.5, 1.5]), "clip"), [0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # far outside the fitted range: 0 and 1, without an overflow warning
        np.testing.assert_array_equal(from_space(np.array([-1e4, 1e4]), "logit"), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown space"):
        to_space(v, "probit")


def test_clip_space_is_the_simulator_on_raw_values_clipped():
    runs = _runs()
    fit, val = runs[:6], runs[6:]
    wrapped = OnMetric(lambda: MeanTrajectory(runs.n_train), "p", space="clip").fit(fit, val)
    direct = MeanTrajectory(runs.n_train).fit(fit.on_metric("p"))
    for run in val:
        expected = np.clip(direct.simulate(run.curriculum, run.metrics["p"][0]), 0, 1)
        np.testing.assert_allclose(wrapped.simulate(run.curriculum, run.metrics["p"][0]), expected)


def test_auto_picks_the_space_with_the_lower_validation_mse_computed_independently():
    runs = _runs()
    fit, val = runs[:6], runs[6:]
    wrapped = OnMetric(lambda: MeanTrajectory(runs.n_train), "p").fit(fit, val)
    mses = {}
    for space in ("clip", "logit"):
        sim = OnMetric(lambda: MeanTrajectory(runs.n_train), "p", space=space).fit(fit, val)
        mses[space] = np.mean([all_steps_mse(sim.simulate(r.curriculum, r.metrics["p"][0]), r.metrics["p"]) for r in val])
    assert wrapped.space_ == min(mses, key=mses.get)
    assert wrapped.val_mse_ == pytest.approx(mses)


def test_every_registered_simulator_takes_a_metric_and_stays_in_bounds():
    runs = _runs(n_runs=10)
    names = ["mean-trajectory", "additive", "multiplicative", "linear", "time-effects"]
    frame, fitted = score_registered(runs[:6], runs[6:8], runs[8:], names=names, metric="p")
    assert list(frame["simulator"].unique()) == [f.label for f in fitted.values()]
    for sim in fitted.values():
        pred = sim.simulate(runs[9].curriculum, runs[9].metrics["p"][0])
        assert pred.shape == runs[9].losses.shape and pred.min() >= 0 and pred.max() <= 1
    assert np.isfinite(frame["all_steps_mse"]).all()


def test_a_missing_metric_is_named_with_the_run():
    runs = _runs()
    with pytest.raises(ValueError, match=r"run 0 \(position 0\) has no metric 'bleu'; it has: loss, hit, p"):
        OnMetric(lambda: MeanTrajectory(runs.n_train), "bleu").fit(runs[:4], runs[4:])
    with pytest.raises(ValueError, match="pass val="):
        OnMetric(lambda: MeanTrajectory(runs.n_train), "p").fit(runs[:4])
    with pytest.raises(ValueError, match="call fit"):
        OnMetric(lambda: MeanTrajectory(runs.n_train), "p").simulate(runs[0].curriculum, runs[0].metrics["p"][0])


def test_build_wraps_any_registered_simulator_for_a_metric_and_passes_its_fit_options():
    from simflib.experiments import build

    runs = _runs(n_runs=10)
    sim = build("linear", runs.n_train, metric="p", space="logit", unseen="mean")
    assert isinstance(sim, OnMetric) and sim.label == "Simfluence-Linear"
    sim.fit(runs[:6], runs[6:8], l2_grid=[0.5], features=None)  # l2_grid reaches Linear's fit; features is ignored
    assert sim.simulator.l2 == 0.5 and sim.space_ == "logit"
    def logit_runs(part):
        return RunSet([Run(r.curriculum, to_space(r.metrics["p"], "logit")) for r in part], runs.n_train)

    direct = build("linear", runs.n_train, unseen="mean").fit(logit_runs(runs[:6]), val=logit_runs(runs[6:8]),
                                                             l2_grid=[0.5])
    run = runs[9]
    expected = from_space(direct.simulate(run.curriculum, to_space(run.metrics["p"][0], "logit")), "logit")
    np.testing.assert_allclose(sim.simulate(run.curriculum, run.metrics["p"][0]), expected)
