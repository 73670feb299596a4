"""The curriculum-blind baseline against a loop over runs, and its contract (shapes, unseen test examples)."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import MeanTrajectory, Run, RunSet, Simulator, evaluate


def _runs(rng, lengths, m=4, n=6, b=2, ids=None):
    runs = [Run(rng.integers(0, n, (T, b)), rng.uniform(0.5, 2.0, (T + 1, m))) for T in lengths]
    return RunSet(runs, n, meta={"test_ids": ids} if ids is not None else None)


def test_prediction_is_the_mean_change_of_the_fit_runs_shifted_to_the_initial_loss():
    rng = np.random.default_rng(0)
    runs = _runs(rng, [5, 5, 5])
    sim = MeanTrajectory(6).fit(runs)
    assert isinstance(sim, Simulator)
    start = rng.uniform(0.5, 2.0, 4)
    pred = sim.simulate(rng.integers(0, 6, (5, 2)), start)
    for t in range(6):
        for j in range(4):
            changes = [run.losses[t, j] - run.losses[0, j] for run in runs]
            assert pred[t, j] == pytest.approx(start[j] + sum(changes) / 3, abs=1e-12)


def test_the_curriculum_does_not_change_the_prediction_but_its_length_does():
    rng = np.random.default_rng(1)
    sim = MeanTrajectory(6).fit(_runs(rng, [4, 4]))
    start = np.ones(4)
    a, b = sim.simulate(rng.integers(0, 6, (4, 2)), start), sim.simulate(np.full((4, 2), -1), start)
    np.testing.assert_array_equal(a, b)
    longer = sim.simulate(rng.integers(0, 6, (7, 2)), start)
    assert longer.shape == (8, 4)
    np.testing.assert_array_equal(longer[:5], a)
    np.testing.assert_array_equal(longer[5:], np.repeat(a[-1:], 3, axis=0))  # the last change is held


def test_runs_of_different_lengths_average_over_the_runs_that_reach_each_step():
    rng = np.random.default_rng(2)
    runs = _runs(rng, [2, 4])
    sim = MeanTrajectory(6).fit(runs)
    pred = sim.simulate(np.zeros((4, 1), dtype=int), np.zeros(4))
    both = [(r.losses[2] - r.losses[0]) for r in runs]
    np.testing.assert_allclose(pred[2], (both[0] + both[1]) / 2, atol=1e-12)
    np.testing.assert_allclose(pred[4], runs[1].losses[4] - runs[1].losses[0], atol=1e-12)


def test_stacked_curricula_give_stacked_trajectories():
    rng = np.random.default_rng(3)
    sim = MeanTrajectory(6).fit(_runs(rng, [3, 3]))
    curricula, starts = rng.integers(0, 6, (5, 3, 2)), rng.uniform(size=(5, 4))
    stacked = sim.simulate(curricula, starts)
    assert stacked.shape == (5, 4, 4)
    for k in range(5):
        np.testing.assert_array_equal(stacked[k], sim.simulate(curricula[k], starts[k]))


def test_unseen_test_examples_get_the_mean_change_over_fitted_ones():
    rng = np.random.default_rng(4)
    runs = _runs(rng, [3, 3, 3], ids=["a", "b", "c", "d"])
    sim = MeanTrajectory(6).fit(runs)
    own = sim.simulate(np.zeros((3, 1), dtype=int), np.zeros(4))
    pred = sim.simulate(np.zeros((3, 1), dtype=int), np.zeros(2), test_ids=["c", "new"])
    np.testing.assert_array_equal(pred[:, 0], own[:, 2])
    np.testing.assert_allclose(pred[:, 1], own.mean(axis=1), atol=1e-12)


def test_blind_baseline_has_no_lds_and_a_defined_mse():
    rng = np.random.default_rng(5)
    base = np.linspace(2.0, 1.0, 5)[:, None].repeat(3, 1)
    runs = RunSet([Run(rng.integers(0, 6, (4, 2)), base + rng.normal(0, 0.01, (5, 3)) * [[0], [1], [1], [1], [1]])
                   for _ in range(6)], 6)
    frame = evaluate(MeanTrajectory(6).fit(runs[:3]), runs[3:])
    assert frame["final_step_lds"].isna().all() and (frame["lds_skipped"] == 3).all()
    assert (frame["all_steps_mse"] > 0).all()


def test_bad_input_is_named():
    rng = np.random.default_rng(6)
    sim = MeanTrajectory(6)
    with pytest.raises(ValueError, match="not fitted"):
        sim.simulate([[0]], [1.0])
    sim.fit(_runs(rng, [3]))
    with pytest.raises(ValueError, match="fitted on 4"):
        sim.simulate([[0]], [1.0, 2.0])
    with pytest.raises(ValueError, match="test_ids names 1"):
        sim.simulate([[0]], [1.0, 2.0], test_ids=[0])
    with pytest.raises(ValueError, match="out of range"):
        sim.simulate([[9]], np.ones(4))
    with pytest.raises(ValueError, match="n_train=6 but the simulator was built for n_train=5"):
        MeanTrajectory(5).fit(_runs(rng, [3]))
