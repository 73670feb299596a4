"""Simulator classes: fitting, lambda selection on validation runs, refusing unseen examples, evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from simflib import (
    Run,
    RunSet,
    SimfluenceAdditive,
    SimfluenceLinear,
    SimfluenceMultiplicative,
    Simulator,
    evaluate,
    summarize,
    synthetic,
)
from simflib.functional.metrics import all_steps_mse
from tests.conftest import dense_design, naive_simulate


@pytest.fixture(scope="module")
def split(few_shot_truth, few_shot_curricula):
    from simflib import curriculum

    curr = curriculum.protocol(32, seed=4, n_train=100, subset_size=64, epochs=4, batch_size=4)
    return synthetic.markov_runs(few_shot_truth, curr, noise=0.003, seed=7).split(seed=0)


def test_classes_fit_the_same_problem_as_the_functional_core(split):
    """Each class's A and B are the ridge solution of Eq. 2, solved densely per test example with numpy."""
    fit, _, _ = split
    l2 = 0.01
    lin = SimfluenceLinear(100, l2=l2, tol=1e-12).fit(fit)
    add = SimfluenceAdditive(100, l2=l2, tol=1e-12).fit(fit)
    mul = SimfluenceMultiplicative(100, l2=l2, tol=1e-12).fit(fit)
    assert lin.A.shape == lin.B.shape == (12, 100)
    assert add.A is None and mul.B is None
    assert isinstance(lin, Simulator)
    batches = np.concatenate([r.curriculum for r in fit])
    before = np.concatenate([r.losses[:-1] for r in fit])
    after = np.concatenate([r.losses[1:] for r in fit])
    for j in (0, 5, 11):
        x = dense_design(batches, before[:, j], 100)  # [X^alpha | X^beta]
        for sim, cols, target in ((lin, slice(None), after[:, j]), (mul, slice(0, 100), after[:, j]),
                                  (add, slice(100, 200), after[:, j] - before[:, j])):
            xs = x[:, cols]
            theta = np.linalg.solve(xs.T @ xs + l2 * np.eye(xs.shape[1]), xs.T @ target)
            got = np.concatenate([p[j] for p in (sim.A, sim.B) if p is not None])
            np.testing.assert_allclose(got, theta, rtol=1e-6, atol=1e-9)
    run = fit[0]
    for sim in (lin, add, mul):
        np.testing.assert_allclose(sim.simulate(run.curriculum, run.initial_loss),
                                   naive_simulate(run.curriculum, run.initial_loss, sim.A, sim.B))


def test_lambda_chosen_by_validation_mse(split):
    fit, val, _ = split
    grid = [1e-4, 1e-2, 1.0, 100.0]
    sim = SimfluenceLinear(100).fit(fit, val=val, l2_grid=grid)
    table = sim.validation
    assert table["l2"].tolist() == grid
    assert sim.l2 == table.loc[table["val_all_steps_mse"].idxmin(), "l2"]
    # The reported validation MSE is what a fresh fit at that lambda gives.
    fresh = SimfluenceLinear(100, l2=100.0).fit(fit)
    mse = np.mean([all_steps_mse(fresh.simulate(r.curriculum, r.initial_loss), r.losses) for r in val])
    assert table.loc[table["l2"] == 100.0, "val_all_steps_mse"].item() == pytest.approx(mse, rel=1e-6)


def test_linear_beats_both_ablations_when_the_truth_has_both_effects():
    """On runs from a linear Markov truth whose multiplicative and additive influences both exceed the noise, each
    ablation lacks a term the data need: Linear has the lowest held-out MSE."""
    from simflib import curriculum

    truth = synthetic.markov_truth(100, 12, batch_size=4, seed=3, decay=0.02, spread=0.02)
    curr = curriculum.protocol(32, seed=4, n_train=100, subset_size=64, epochs=4, batch_size=4)
    fit, val, test = synthetic.markov_runs(truth, curr, noise=0.003, seed=7).split(seed=0)
    grid = [1e-4, 1e-3, 1e-2, 1e-1]
    per_run = [evaluate(cls(100).fit(fit, val=val, l2_grid=grid), test) for cls in (SimfluenceLinear, SimfluenceAdditive, SimfluenceMultiplicative)]
    table = summarize(__import__("pandas").concat(per_run))
    mse = table["all_steps_mse_mean"]
    assert mse["Simfluence-Linear"] < mse["Simfluence-Additive"]
    assert mse["Simfluence-Linear"] < mse["Simfluence-Multiplicative"]
    assert table.loc["Simfluence-Linear", "runs"] == 10


def test_summarize_matches_numpy(split):
    fit, _, test = split
    per_run = evaluate(SimfluenceLinear(100, l2=0.01).fit(fit), test, name="lin")
    row = summarize(per_run).loc["lin"]
    assert row["all_steps_mse_mean"] == pytest.approx(per_run["all_steps_mse"].mean())
    assert row["final_step_spearman_std"] == pytest.approx(np.std(per_run["final_step_spearman"], ddof=1))
    assert row["all_steps_mse"] == f"{row['all_steps_mse_mean']:.3g} ± {row['all_steps_mse_std']:.3g}"
    assert summarize(per_run, fmt=".3f").loc["lin", "final_step_spearman"].count(".") == 2


def test_unseen_training_example_is_refused_with_its_step():
    rng = np.random.default_rng(0)
    from simflib import Run

    runs = RunSet([Run(rng.integers(0, 4, (30, 2)), rng.uniform(1, 2, (31, 3))) for _ in range(3)], n_train=6)
    sim = SimfluenceLinear(6, l2=0.1).fit(runs)
    with pytest.raises(ValueError, match="step 2 uses training example 5, which no fitted step observed"):
        sim.simulate([[0, 1], [5, 1]], np.ones(3))
    with pytest.raises(ValueError, match="curriculum 1, step 1 uses training example 4"):
        sim.simulate([[[0, 1]], [[4, -1]]], np.ones(3))


def test_usage_errors():
    with pytest.raises(ValueError, match="not fitted"):
        SimfluenceLinear(5).simulate([[0]], [1.0])
    with pytest.raises(ValueError, match="n_train"):
        SimfluenceLinear(0)
    rng = np.random.default_rng(0)
    from simflib import Run

    runs = RunSet([Run(rng.integers(0, 4, (5, 2)), rng.uniform(1, 2, (6, 3)))], n_train=4)
    with pytest.raises(ValueError, match="n_train=4 but the simulator was built for n_train=5"):
        SimfluenceLinear(5).fit(runs)
    with pytest.raises(ValueError, match="needs validation runs"):
        SimfluenceLinear(4).fit(runs, l2_grid=[1.0])
    with pytest.raises(ValueError, match="no runs"):
        SimfluenceLinear(4).fit([])


def test_unseen_mean_policy_imputes_the_mean_observed_influence():
    rng = np.random.default_rng(1)
    from simflib import Run

    runs = RunSet([Run(rng.integers(0, 4, (30, 2)), rng.uniform(1, 2, (31, 3))) for _ in range(3)], n_train=6)
    sim = SimfluenceLinear(6, l2=0.1, unseen="mean").fit(runs)
    a_mean, b_mean = sim.A[:, :4].mean(axis=1), sim.B[:, :4].mean(axis=1)
    l0 = np.array([1.0, 2.0, 3.0])
    out = sim.simulate([[5, 1]], l0)
    expected = (a_mean + sim.A[:, 1]) * l0 + b_mean + sim.B[:, 1]
    np.testing.assert_allclose(out[1], expected, rtol=1e-12)
    np.testing.assert_array_equal(sim.A[:, 5], 0.0)  # the fitted parameters themselves are untouched
    with pytest.raises(ValueError, match="unseen"):
        SimfluenceLinear(6, unseen="zero")


def test_evaluate_rescale_uses_the_best_factor_per_trajectory():
    # A simulator that is right up to a factor per test example: rescaling (with the ground truth) makes it exact.
    rng = np.random.default_rng(0)
    runs = [Run(rng.integers(0, 5, (6, 2)), rng.uniform(0.5, 1.5, (7, 3))) for _ in range(2)]

    class Scaled:
        def simulate(self, curriculum, initial_loss):
            run = next(r for r in runs if np.array_equal(r.curriculum, curriculum))
            out = run.losses.copy()
            out[1:] *= np.array([2.0, 0.5, -1.0])
            return out

    raw = evaluate(Scaled(), runs)
    rescaled = evaluate(Scaled(), runs, rescale=True)
    assert (raw.all_steps_mse > 0.1).all()
    np.testing.assert_allclose(rescaled.all_steps_mse, 0.0, atol=1e-24)
    np.testing.assert_array_equal(rescaled.final_step_spearman, raw.final_step_spearman)  # ranks: unscaled


def test_validation_runs_alone_choose_lambda_from_the_documented_grid(split):
    from simflib.simulators import L2_GRID

    fit, val, _ = split
    chosen = SimfluenceLinear(100).fit(fit, val=val)
    explicit = SimfluenceLinear(100).fit(fit, val=val, l2_grid=list(L2_GRID))
    assert chosen.validation["l2"].tolist() == sorted(L2_GRID)
    assert chosen.l2 == explicit.l2
    np.testing.assert_array_equal(chosen.A, explicit.A)


def test_influence_frame_lists_every_pair_with_its_fitted_parameters(split):
    fit, _, _ = split
    sim = SimfluenceLinear(fit.n_train, l2=0.1).fit(fit)
    frame = sim.influence_frame()
    assert len(frame) == sim.m * fit.n_train
    for j, i in [(0, 0), (sim.m - 1, fit.n_train - 1), (1, 3)]:
        row = frame[(frame.test_example == j) & (frame.train_example == i)].iloc[0]
        assert row.A == sim.A[j, i] and row.B == sim.B[j, i] and row.observed_steps == sim.counts[i]
    additive = SimfluenceAdditive(fit.n_train, l2=0.1).fit(fit).influence_frame()
    assert "A" not in additive and "B" in additive
    with pytest.raises(ValueError, match="not fitted"):
        SimfluenceLinear(fit.n_train).influence_frame()
