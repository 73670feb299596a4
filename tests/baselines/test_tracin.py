"""TracIn-CP on recorded runs of a tiny model: brute force, Captum, the Eq. 11 equivalence, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from simflib import SimfluenceAdditive  # noqa: E402
from simflib.baselines import HypotheticalSums, tracin_cp  # noqa: E402
from simflib.collect import CollectConfig, Setting, collect  # noqa: E402
from simflib.tracin import (  # noqa: E402
    accumulate_sums,
    checkpoint_path,
    hypothetical_reductions,
    hypothetical_sums,
    load_checkpoints,
)

pytestmark = pytest.mark.slow  # trains or loads real models


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_bert):
    """Two runs of 6 steps, every step's checkpoint saved."""
    config = CollectConfig(task="piqa", model=tiny_bert, method="ia3", n_runs=2, n_pool=8, subset_size=8, epochs=3,
                           m=4, lr=0.05, max_length=24, checkpoints=-1)
    folder = tmp_path_factory.mktemp("tracin-runs")
    runs = collect(config, folder, progress=False)
    return config, folder, runs, Setting(config)


def _loop_gradient(model, data, i):
    one = torch.tensor([i])
    loss = torch.nn.functional.cross_entropy(model(**data.select(one)), data.labels[one])
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads]).double()


def test_saved_and_recreated_checkpoints_agree(recorded):
    config, folder, runs, setting = recorded
    saved = load_checkpoints(folder, 1)
    assert sorted(saved) == list(range(runs[1].n_steps))
    again = setting.checkpoints(1, steps=[0, 3, 5])
    for t in (0, 3, 5):
        for name, value in saved[t].items():
            np.testing.assert_allclose(again[t][name], value, rtol=0, atol=1e-6)


def test_reductions_are_eta_times_gradient_dot_products(recorded):
    config, folder, runs, setting = recorded
    states = load_checkpoints(folder, 0, steps=[0, 4])
    loss, reduction = hypothetical_reductions(setting, runs[0], states)
    assert loss.shape == (2, 4) and reduction.shape == (2, 8, 4)
    np.testing.assert_array_equal(loss, runs[0].losses[[0, 4]])
    model = setting.model
    for c, t in enumerate((0, 4)):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in states[t]:
                    p.copy_(torch.as_tensor(states[t][name]))
        g_train = [_loop_gradient(model, setting.train_data, i) for i in range(8)]
        g_test = [_loop_gradient(model, setting.test_data, j) for j in range(4)]
        eta = config.lr / config.batch_size  # each example's share of a batch-mean step
        brute = np.array([[eta * float(gi @ gj) for gj in g_test] for gi in g_train])
        np.testing.assert_allclose(reduction[c], brute, rtol=1e-4, atol=1e-9)
    model.load_state_dict(setting.initial)


def test_tracin_cp_equals_hypothetical_additive_on_a_real_model(recorded, tmp_path):
    # Eq. 11: Simfluence-Additive fitted (lambda = 0) to first-order hypothetical losses is TracIn-CP / C.
    config, folder, runs, setting = recorded
    states = load_checkpoints(folder, 0)
    loss, reduction = hypothetical_reductions(setting, runs[0], states)
    scores = tracin_cp(reduction)
    additive = SimfluenceAdditive(config.n_pool, l2=0.0).fit(HypotheticalSums.from_arrays(loss, reduction))
    np.testing.assert_allclose(additive.B, -scores / len(states), rtol=0, atol=1e-6 * np.abs(scores).max())
    streamed = hypothetical_sums(setting, runs[0], states)
    np.testing.assert_allclose(streamed.reduction, reduction.sum(axis=0), rtol=1e-12, atol=1e-15)
    # Resumable accumulation over runs: the second call reads the files the first wrote.
    first = accumulate_sums(setting, {0: runs[0], 1: runs[1]}, tmp_path, checkpoints="saved", folder=folder, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-00000.npz", "run-00001.npz"]
    second = accumulate_sums(setting, {0: runs[0], 1: runs[1]}, tmp_path, checkpoints="all", progress=False)
    assert first.count == second.count == runs[0].n_steps + runs[1].n_steps
    np.testing.assert_array_equal(first.reduction, second.reduction)


def test_captum_tracincp_gives_the_same_scores(recorded):
    # Peer check: Captum's TracInCP on the same model, checkpoints and learning rate.
    captum_influence = pytest.importorskip("captum.influence")
    config, folder, runs, setting = recorded
    states = load_checkpoints(folder, 0, steps=[0, 2, 5])
    _, reduction = hypothetical_reductions(setting, runs[0], states)
    ours = tracin_cp(reduction).T  # (n, m)

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    wrapped = Logits(setting.model)
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]

    def load(model, key):
        with torch.no_grad():
            for name, p in setting.model.named_parameters():
                if name in states[int(key)]:
                    p.copy_(torch.as_tensor(states[int(key)][name]))
        return config.lr / config.batch_size

    def tensors(data):
        return (data.input_ids, data.attention_mask, data.token_type_ids, data.labels)

    train = torch.utils.data.TensorDataset(*tensors(setting.train_data))
    layers = sorted({name.rsplit(".", 1)[0].removeprefix("model.") for name in trainable})
    tracin = captum_influence.TracInCP(
        wrapped, train, checkpoints=[str(t) for t in states], checkpoints_load_func=load,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), batch_size=8,
        layers=[f"model.{name}" for name in layers],
    )
    theirs = tracin.influence(tensors(setting.test_data)).detach().double().numpy().T  # (n, m)
    setting.model.load_state_dict(setting.initial)
    assert theirs.shape == ours.shape
    assert np.corrcoef(theirs.ravel(), ours.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(theirs, ours, rtol=1e-3, atol=1e-6 * np.abs(ours).max())


def test_bad_checkpoints_are_named(recorded, tmp_path):
    config, folder, runs, setting = recorded
    with pytest.raises(ValueError, match=r"run 1: no checkpoint saved for step\(s\) \[99\]"):
        load_checkpoints(folder, 1, steps=[99])
    with pytest.raises(ValueError, match="run 7 has no saved checkpoints"):
        load_checkpoints(folder, 7)
    states = load_checkpoints(folder, 0, steps=[0, 1])
    name = next(iter(states[1]))
    broken = {0: states[0], 1: {k: v for k, v in states[1].items() if k != name}}
    with pytest.raises(ValueError, match="checkpoint of step 1 does not match step 0"):
        hypothetical_reductions(setting, runs[0], broken)
    poisoned = {1: {k: (np.full_like(v, np.nan) if k == name else v) for k, v in states[1].items()}}
    with pytest.raises(ValueError, match="checkpoint of step 1: .*non-finite gradient for example 0"):
        hypothetical_reductions(setting, runs[0], poisoned)
    with pytest.raises(ValueError, match="outside the run's steps"):
        hypothetical_reductions(setting, runs[0], {50: states[0]})
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"fingerprint": "different"}')
    checkpoint_path(other, 0).write_bytes(checkpoint_path(folder, 0).read_bytes())
    with pytest.raises(ValueError, match="not the folder's different"):
        load_checkpoints(other, 0)
    data = checkpoint_path(folder, 0).read_bytes()
    for cut in (len(data) // 2, 40, 3):  # finding: a truncated file named neither the file nor the run
        checkpoint_path(other, 0).write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"run-00000.ckpt.safetensors: run 0: damaged or truncated checkpoint"):
            load_checkpoints(other, 0)


def test_tracin_ideal_equals_additive_b_on_real_batch_one_runs(tmp_path, tiny_bert):
    # Eq. 6 on real recorded runs: batch size 1 and lambda = 0 give B_i = -TracIn-Ideal_i / |T_i|.
    from simflib.baselines import tracin_ideal

    config = CollectConfig(task="boolq", model=tiny_bert, method="ia3", n_runs=2, n_pool=6, subset_size=6, epochs=2,
                           batch_size=1, m=3, lr=0.05, max_length=24, checkpoints=0)
    runs = collect(config, tmp_path, progress=False)
    additive = SimfluenceAdditive(6, l2=0.0).fit(runs)
    assert (additive.counts == 4).all()
    np.testing.assert_allclose(additive.B, -tracin_ideal(runs) / additive.counts, rtol=0, atol=1e-10)


def test_first_order_prediction_holds_for_sgd_and_not_for_adam(recorded):
    from simflib.tracin import one_step_check

    config, folder, runs, setting = recorded
    state = load_checkpoints(folder, 0, steps=[2])[2]
    actual, predicted = one_step_check(setting, state, 3, optimizer="sgd", lr=1e-3)
    assert np.abs(predicted).max() > 0
    np.testing.assert_allclose(actual, predicted, rtol=0.05, atol=0.05 * np.abs(predicted).max())
    actual_adam, predicted_adam = one_step_check(setting, state, 3, optimizer="adam", lr=1e-3)
    np.testing.assert_array_equal(predicted_adam, predicted)
    scale = np.linalg.norm(actual_adam) / np.linalg.norm(predicted)
    assert scale > 3, scale  # Adam's first step is about lr * sign(g): far larger than lr * g for small gradients
    with pytest.raises(ValueError, match="optimizer must be"):
        one_step_check(setting, state, 3, optimizer="lion", lr=1e-3)


def test_the_final_model_can_be_recreated(recorded):
    config, folder, runs, setting = recorded
    T = runs[0].n_steps
    final = setting.checkpoints(0, steps=[T - 1, T])
    saved = load_checkpoints(folder, 0, steps=[T - 1])[T - 1]
    name = next(iter(saved))
    np.testing.assert_allclose(final[T - 1][name], saved[name], atol=1e-6)
    assert not np.allclose(final[T][name], saved[name])  # one more update
    with pytest.raises(ValueError, match=r"steps \[7\] are outside 0..6"):
        setting.checkpoints(0, steps=[T + 1])
