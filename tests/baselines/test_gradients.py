"""Per-example gradients: vmap equals a loop of ordinary backward passes; products at a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from simflib.gradients import gradient_products, per_example_gradients  # noqa: E402
from simflib.models import ChoiceModel, apply_method, encode  # noqa: E402
from simflib.tasks import load_task, pool_and_test  # noqa: E402

pytestmark = pytest.mark.slow  # trains or loads real models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from simflib.models import resolve_model

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    encoder = transformers.BertModel(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"), local_files_only=True)
    pool, test = pool_and_test(load_task("piqa"), n_pool=6, m=3, seed=0)
    return encoder, tokenizer, pool, test


@pytest.mark.parametrize("method", ["ia3", "lora", "full"])
def test_vmap_equals_loop(tiny, method):
    import copy

    encoder, tokenizer, pool, _ = tiny
    model = apply_method(ChoiceModel(copy.deepcopy(encoder), mode="multiple_choice", head_seed=1), method)
    data = encode(pool, tokenizer, mode="multiple_choice", max_length=32)
    vm = per_example_gradients(model, data, method="vmap", chunk_size=4)
    lp = per_example_gradients(model, data, method="loop")
    assert vm.shape == lp.shape and vm.shape[0] == 6
    np.testing.assert_allclose(vm.numpy(), lp.numpy(), rtol=1e-4, atol=1e-6)
    assert vm.abs().sum() > 0


def test_products_at_a_checkpoint_and_mismatched_state(tiny):
    import copy

    encoder, tokenizer, pool, test = tiny
    model = apply_method(ChoiceModel(copy.deepcopy(encoder), mode="multiple_choice", head_seed=1), "ia3")
    train_data = encode(pool, tokenizer, mode="multiple_choice", max_length=32)
    test_data = encode(test, tokenizer, mode="multiple_choice", max_length=32)
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    products = gradient_products(model, state, train_data, test_data)
    g_tr = per_example_gradients(model, train_data, method="loop")
    g_te = per_example_gradients(model, test_data, method="loop")
    np.testing.assert_allclose(products.numpy(), (g_tr @ g_te.T).numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="does not match the trainable parameters"):
        gradient_products(model, {k: v for k, v in list(state.items())[1:]}, train_data, test_data)
    # At another checkpoint: the products are those of the model at that checkpoint, and afterwards the model holds
    # its own parameters again (it used to be left at the checkpoint).
    moved = {k: v + 0.05 * torch.randn_like(v) for k, v in state.items()}
    at_moved = gradient_products(model, moved, train_data, test_data)
    for name, p in model.named_parameters():
        if name in state:
            torch.testing.assert_close(p.detach(), state[name], rtol=0, atol=0)
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in shifted.named_parameters():
            if name in moved:
                p.copy_(moved[name])
    g_tr, g_te = (per_example_gradients(shifted, d, method="loop") for d in (train_data, test_data))
    np.testing.assert_allclose(at_moved.numpy(), (g_tr @ g_te.T).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["ia3", "full"])
def test_preconditioned_products_in_blocks_equal_the_dense_formula(tiny, method):
    import copy

    from simflib.features import ADAM_EPS, preconditioned_products

    encoder, tokenizer, pool, test = tiny
    model = apply_method(ChoiceModel(copy.deepcopy(encoder), mode="multiple_choice", head_seed=1), method)
    train_data = encode(pool, tokenizer, mode="multiple_choice", max_length=32)
    test_data = encode(test, tokenizer, mode="multiple_choice", max_length=32)
    g_tr = per_example_gradients(model, train_data, method="loop").double().numpy()
    g_te = per_example_gradients(model, test_data, method="loop").double().numpy()
    v = (g_tr**2).mean(axis=0)  # the pool's mean squared gradient: Adam's second moment for a pool batch
    expected = (g_tr / (np.sqrt(v) + ADAM_EPS)) @ g_te.T
    # Blocks that split the pool and the test set unevenly, and no split at all; pool gradients kept or recomputed.
    for block, max_bytes in ((2, 2e9), (4, 0), (100, 0)):
        got = preconditioned_products(model, train_data, test_data, block=block, chunk_size=3, max_bytes=max_bytes)
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6 * np.abs(expected).max())
