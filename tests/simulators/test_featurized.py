"""Simfluence-TE(-Grad) and GPTfluence as simulators: hyperparameter choice, unseen test examples, features, errors."""

from __future__ import annotations

import numpy as np
import pytest

import simflib as sf
from simflib import curriculum, synthetic
from simflib.functional import all_steps_mse, fit_dynamics, simulate_dynamics
from simflib.simulators import ExampleFeatures, GPTfluence, SimfluenceTE, SimfluenceTEGrad

N, M = 30, 6


@pytest.fixture(scope="module")
def parts():
    truth = synthetic.markov_truth(N, M, batch_size=2, seed=0)
    curr = curriculum.protocol(16, seed=1, n_train=N, subset_size=20, epochs=2, batch_size=2)
    runs = synthetic.markov_runs(truth, curr, noise=0.002, seed=2)
    runs.meta["test_ids"] = [f"t{j}" for j in range(M)]
    return runs.split(seed=0, sizes=(10, 2, 4))


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return ExampleFeatures(
        pool_ids=tuple(f"p{i}" for i in range(N)),
        test_ids=tuple(f"t{j}" for j in range(M)),
        gradient_products=rng.normal(size=(N, M)),
        pool_text=rng.normal(size=(N, 8)),
        test_text=rng.normal(size=(M, 8)),
    )


def test_te_chooses_the_grid_point_with_the_lowest_validation_mse(parts):
    fit, val, _ = parts
    sim = SimfluenceTE(N).fit(fit, val=val, momentum_grid=(0.0, 0.9), l2_grid=(1e-3, 1e-1))
    # Brute force: every grid point fitted directly, scored on the validation runs.
    scores = {}
    for kappa in (0.0, 0.9):
        for l2 in (1e-3, 1e-1):
            p = fit_dynamics([r.curriculum for r in fit], [r.losses for r in fit], N, momentum=kappa, l2=l2)
            scores[(kappa, l2)] = np.mean([
                all_steps_mse(simulate_dynamics(r.curriculum, r.initial_loss, steps=p.steps, scale=p.scale, B=p.B,
                                                momentum=kappa), r.losses) for r in val])
    best = min(scores, key=scores.get)
    assert (sim.momentum, sim.l2) == best
    assert len(sim.validation) == 4
    assert sim.validation.val_all_steps_mse.min() == pytest.approx(scores[best], rel=1e-12)


def test_unseen_test_examples_get_the_fitted_means(parts, features):
    fit, val, held = parts
    seen = ["t0", "t2", "t3", "t5"]
    sim = SimfluenceTE(N, l2=0.01, momentum=0.5).fit(fit.select(tests=seen))
    run = held[0]
    ids = ["t1", "t2"]
    out = sim.simulate(run.curriculum, run.initial_loss[[1, 2]], test_ids=ids)
    p = sim.params
    mean = simulate_dynamics(run.curriculum, run.initial_loss[[1]], steps=p.steps.mean(1, keepdims=True),
                             scale=np.zeros(1), B=p.B.mean(0, keepdims=True), momentum=0.5)
    np.testing.assert_allclose(out[:, :1], mean, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], sim.simulate(run.curriculum, run.initial_loss[[0, 2, 3, 5]])[:, 1])
    with pytest.raises(ValueError, match="pass test_ids"):
        sim.simulate(run.curriculum, run.initial_loss)
    # With a gradient prior, an unseen test example also gets its own prior column.
    grad = SimfluenceTEGrad(N, features=features, l2=0.01, momentum=0.5).fit(fit.select(tests=seen))
    out = grad.simulate(run.curriculum, run.initial_loss[[1]], test_ids=["t1"])
    p = grad.params
    expected = simulate_dynamics(run.curriculum, run.initial_loss[[1]], steps=p.steps.mean(1, keepdims=True),
                                 scale=np.array([p.scale.mean()]), B=p.B.mean(0, keepdims=True), momentum=0.5,
                                 prior=features.products(["t1"]))
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_featurized_simulators_refuse_missing_or_mismatched_features(parts, features):
    fit, val, held = parts
    with pytest.raises(ValueError, match="needs the setting's example features"):
        SimfluenceTEGrad(N).fit(fit)
    with pytest.raises(ValueError, match="needs text features"):
        GPTfluence(N).fit(fit)
    with pytest.raises(ValueError, match="pool of 30, the runs one of 31"):
        SimfluenceTEGrad(31, features=features).fit(sf.RunSet(list(fit), 31, meta=fit.meta))
    other = ExampleFeatures(features.pool_ids, ("t0", "x"), features.gradient_products[:, :2])
    with pytest.raises(ValueError, match="no features for test example 't1'"):
        SimfluenceTEGrad(N, features=other).fit(fit)
    fitted = SimfluenceTEGrad(N, features=features).fit(fit)
    with pytest.raises(ValueError, match="no features for test example 'new'"):
        fitted.simulate(held[0].curriculum, held[0].initial_loss[:1], test_ids=["new"])


def test_example_features_check_shapes_values_and_the_file(tmp_path, features):
    with pytest.raises(ValueError, match="gradient_products has shape"):
        ExampleFeatures(("a", "b"), ("t",), gradient_products=np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        ExampleFeatures(("a",), ("t",), gradient_products=np.array([[np.inf]]))
    with pytest.raises(ValueError, match="repeats an id"):
        ExampleFeatures(("a", "a"), ("t",))
    with pytest.raises(ValueError, match="dimension"):
        ExampleFeatures(("a",), ("t",), pool_text=np.ones((1, 3)), test_text=np.ones((1, 4)))
    path = features.save(tmp_path / "f.npz")
    back = ExampleFeatures.load(path)
    assert back.pool_ids == features.pool_ids and back.test_ids == features.test_ids
    np.testing.assert_array_equal(back.gradient_products, features.gradient_products)
    np.testing.assert_array_equal(back.test_text, features.test_text)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad.npz"):
        ExampleFeatures.load(tmp_path / "bad.npz")


def test_gptfluence_rollout_is_the_markov_recursion_of_its_factors(parts, features):
    import torch

    fit, val, held = parts
    sim = GPTfluence(N, features=features, order=2, max_steps=30, eval_every=10, seed=3).fit(fit, val=val)
    again = GPTfluence(N, features=features, order=2, max_steps=30, eval_every=10, seed=3).fit(fit, val=val)
    assert sim.history == again.history  # deterministic given the seed
    run = held[0]
    pool, test = features.text(sim.test_ids)
    with torch.no_grad():
        F = sim._factors(sim._net, torch.tensor(pool, dtype=torch.float32), torch.tensor(test, dtype=torch.float32))
    F = F.double().numpy()  # (3, n, m): a_1, a_2, b
    L = [run.initial_loss, run.initial_loss]
    for batch in run.curriculum:
        idx = batch[batch >= 0]
        a1, a2, b = (F[q][idx].sum(0) for q in range(3))
        L.append(a1 * L[-1] + a2 * L[-2] + b)
    np.testing.assert_allclose(sim.simulate(run.curriculum, run.initial_loss), np.array(L[1:]), rtol=1e-6)
    # Any test example with text features can be simulated.
    assert sim.simulate(run.curriculum, run.initial_loss[:2], test_ids=["t5", "t0"]).shape == (run.n_steps + 1, 2)


def test_gptfluence_learns_factors_that_are_a_function_of_the_features():
    rng = np.random.default_rng(0)
    n, m, d = 20, 8, 6
    pool_x, test_x = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    A = 0.5 + 0.05 * np.tanh(pool_x @ test_x.T)  # (n, m)
    B = 0.05 * np.tanh(pool_x[:, :1] - test_x[:, :1].T)
    curr = curriculum.protocol(24, seed=1, n_train=n, subset_size=14, epochs=2, batch_size=2)
    runs = []
    for c in curr:
        L = [np.full(m, 2.0)]
        for batch in c:
            L.append(A[batch].sum(0) * L[-1] + B[batch].sum(0))
        runs.append(sf.Run(c, np.array(L)))
    data = sf.RunSet(runs, n)
    feats = ExampleFeatures(tuple(range(n)), tuple(range(m)), pool_text=pool_x, test_text=test_x)
    fit, val, held = data.split(seed=0, sizes=(16, 2, 6))
    sim = GPTfluence(n, features=feats, max_steps=400, eval_every=50).fit(fit, val=val)
    blind = sf.MeanTrajectory(n).fit(fit)
    ours = np.mean([all_steps_mse(sim.simulate(r.curriculum, r.initial_loss), r.losses) for r in held])
    base = np.mean([all_steps_mse(blind.simulate(r.curriculum, r.initial_loss), r.losses) for r in held])
    assert ours < 0.5 * base
