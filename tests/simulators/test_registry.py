"""Every registered simulator keeps the registry's contract: built from n_train, fitted with val, simulates shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import simflib as sf
from simflib import curriculum, synthetic


@pytest.fixture(scope="module")
def parts():
    truth = synthetic.markov_truth(30, 5, batch_size=2, seed=0)
    curr = curriculum.protocol(14, seed=1, n_train=30, subset_size=20, epochs=2, batch_size=2)
    return synthetic.markov_runs(truth, curr, noise=0.002, seed=2).split(seed=0, sizes=(10, 2, 2))


@pytest.fixture(scope="module")
def features(parts):
    rng = np.random.default_rng(0)
    m = parts[0].m
    return sf.ExampleFeatures(tuple(range(30)), tuple(range(m)), gradient_products=rng.normal(size=(30, m)),
                              pool_text=rng.normal(size=(30, 4)), test_text=rng.normal(size=(m, 4)))


@pytest.mark.parametrize("name", sorted(sf.SIMULATORS))
def test_registered_simulators_fit_from_n_train_and_validation_runs(name, parts, features):
    from simflib.experiments import build

    fit, val, test = parts
    cls = sf.SIMULATORS[name]
    # Featurized simulators take the setting's example features by name; the others ignore the option.
    sim = build(name, 30, features=features, max_steps=20).fit(fit, val=val)
    assert isinstance(sim, sf.Simulator) and isinstance(cls.label, str)
    run = test[0]
    assert sim.simulate(run.curriculum, run.initial_loss).shape == run.losses.shape
    stacked = sim.simulate(np.stack([r.curriculum for r in test]), np.stack([r.initial_loss for r in test]))
    assert stacked.shape == (2, *run.losses.shape)
    assert sf.evaluate(sim, test)["simulator"].iloc[0] == cls.label


def test_registry_names_and_the_baseline():
    assert {"linear", "additive", "multiplicative", "mean-trajectory"} <= set(sf.SIMULATORS)
    assert sf.SIMULATORS[sf.BASELINE] is sf.MeanTrajectory
    labels = [cls.label for cls in sf.SIMULATORS.values()]
    assert len(set(labels)) == len(labels)


def test_summarize_improvement_over_the_baseline_per_setting(parts):
    fit, val, test = parts
    frames = []
    for setting, runs in (("a", test), ("b", val)):
        for cls in (sf.MeanTrajectory, sf.SimfluenceLinear):
            frames.append(sf.evaluate(cls(30).fit(fit, val=val), runs).assign(setting=setting))
    per_run = pd.concat(frames, ignore_index=True)
    table = sf.summarize(per_run, baseline="Curriculum-blind", by=("setting", "simulator"))
    for setting in ("a", "b"):
        rows = per_run[per_run.setting == setting]
        blind = rows[rows.simulator == "Curriculum-blind"].all_steps_mse.mean()
        linear = rows[rows.simulator == "Simfluence-Linear"].all_steps_mse.mean()
        assert table.loc[(setting, "Simfluence-Linear"), "mse_improvement"] == pytest.approx(1 - linear / blind, abs=1e-12)
        assert table.loc[(setting, "Curriculum-blind"), "mse_improvement"] == 0.0
    with pytest.raises(ValueError, match="baseline 'nope'"):
        sf.summarize(per_run, baseline="nope", by=("setting", "simulator"))


def test_evaluate_set_level_columns_match_the_functional_metrics(parts):
    from simflib.functional import final_step_lds, mse_decomposition

    fit, val, _ = parts
    runs = list(fit)[:6]
    sim = sf.SimfluenceLinear(30, l2=0.1).fit(fit)
    frame = sf.evaluate(sim, runs)
    pred = np.stack([sim.simulate(r.curriculum, r.initial_loss) for r in runs])
    true = np.stack([r.losses for r in runs])
    assert frame["final_step_lds"].nunique() == 1
    assert frame["final_step_lds"].iloc[0] == final_step_lds(pred, true).score
    assert (frame["mse_shared"].iloc[0], frame["mse_specific"].iloc[0]) == mse_decomposition(pred, true)
    assert frame["all_steps_mse"].mean() == pytest.approx(frame["mse_shared"].iloc[0] + frame["mse_specific"].iloc[0])


def test_learning_curve_keeps_its_held_out_runs_and_nests_its_fit_sets(parts):
    from simflib.experiments import learning_curve

    fit, val, test = parts
    runs = sf.RunSet(list(fit) + list(val) + list(test), 30)
    curve = learning_curve(runs, [4, 8], seed=0, n_val=0, n_test=4, names=["linear"], l2=0.1)
    assert sorted(curve["n_fit"].unique()) == [4, 8] and set(curve["simulator"]) == {"Simfluence-Linear"}
    order = np.random.default_rng(0).permutation(len(runs))
    direct = sf.evaluate(sf.SimfluenceLinear(30, l2=0.1).fit(runs[order[4:12]]), runs[order[:4]])
    np.testing.assert_allclose(curve[curve.n_fit == 8]["all_steps_mse"].to_numpy(), direct["all_steps_mse"].to_numpy())
    with pytest.raises(ValueError, match="need 16, the set has 14"):
        learning_curve(runs, [10], seed=0, n_val=2, n_test=4)


def test_unseen_test_protocol_fits_on_some_examples_and_scores_the_others(parts, features):
    from simflib.experiments import score_unseen_tests, split_tests

    fit, val, test = parts
    seen, unseen = split_tests(fit.test_ids(), seed=0)
    assert sorted(seen + unseen) == sorted(fit.test_ids()) and not set(seen) & set(unseen)
    assert len(unseen) == round(fit.m / 3)
    frame = score_unseen_tests(fit, val, test, seed=0, names=["mean-trajectory", "linear", "gradient-prior"],
                               features=features)
    # Simfluence-Linear cannot simulate a test example it was not fitted on: it is left out.
    assert set(frame.simulator) == {"Curriculum-blind", "Simfluence-TE-Grad"}
    # The baseline on unseen examples: the mean change of the fitted examples, added to each unseen L_0.
    blind = sf.MeanTrajectory(30).fit(fit.select(tests=seen))
    target = test.select(tests=unseen)
    delta = np.mean([r.losses - r.losses[0] for r in fit.select(tests=seen)], axis=0).mean(axis=1, keepdims=True)
    for r in target:
        np.testing.assert_allclose(blind.simulate(r.curriculum, r.initial_loss, test_ids=unseen),
                                   r.initial_loss + delta, rtol=1e-12)
    expected = np.mean([np.mean((r.initial_loss + delta - r.losses)[1:] ** 2) for r in target])
    got = frame[frame.simulator == "Curriculum-blind"].all_steps_mse.mean()
    assert got == pytest.approx(expected, rel=1e-12)


def test_unseen_training_protocol_widens_the_pool_and_simulates_new_examples(features):
    from simflib.experiments import score_unseen_training

    truth = synthetic.markov_truth(30, 5, batch_size=2, seed=0)
    old = curriculum.protocol(12, seed=1, n_train=25, subset_size=16, epochs=2, batch_size=2)  # examples 0..24
    new = curriculum.protocol(3, seed=2, n_train=30, subset_size=16, epochs=2, batch_size=2)  # may use 25..29
    assert (new >= 25).any()
    fit = synthetic.markov_runs(truth, old, noise=0.002, seed=2)
    fit = sf.RunSet(list(fit), 25, meta={"pool_ids": list(range(25))})
    new_runs = synthetic.markov_runs(truth, new, noise=0.002, seed=3)
    new_runs.meta["pool_ids"] = list(range(30))
    frame = score_unseen_training(fit[:10], fit[10:], new_runs, names=["mean-trajectory", "linear", "time-effects",
                                                                      "gradient-prior"], features=features)
    assert set(frame.simulator) == {"Curriculum-blind", "Simfluence-Linear", "Simfluence-TE", "Simfluence-TE-Grad"}
    assert len(frame) == 4 * 3 and frame.all_steps_mse.notna().all()
    # Simfluence-TE never saw examples 25..29: its ridge fit leaves them no influence of their own.
    te = sf.SimfluenceTE(30, l2=0.01, momentum=0.5).fit(sf.RunSet(list(fit[:10]), 30))
    assert np.abs(te.params.B[:, 25:]).max() == 0 and np.abs(te.params.B[:, :25]).max() > 0
    with pytest.raises(ValueError, match="must extend"):
        score_unseen_training(fit[:10], fit[10:], fit[10:], names=["linear"])
