"""Language models as recorded models: the answer-token loss, causal (SmolLM2's Llama) and seq2seq (T5) paths."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from simflib.collect import CollectConfig, Setting, collect  # noqa: E402
from simflib.gradients import per_example_gradients  # noqa: E402
from simflib.models import (  # noqa: E402
    IGNORE_INDEX,
    AnswerLM,
    apply_method,
    encode,
    example_losses,
    load_encoder,
    load_model,
    per_example_loss,
    prompt_and_answer,
)
from simflib.tasks import Example, load_task  # noqa: E402

pytestmark = pytest.mark.slow  # trains or loads real models


def _config(model: str, **kw) -> CollectConfig:
    base = dict(task="piqa", model=model, method="lora", n_runs=2, n_pool=12, subset_size=8, epochs=1,
                m=4, lr=0.05, max_length=40, checkpoints=0)
    return CollectConfig(**{**base, **kw})


def test_load_model_tells_the_kinds_apart(tiny_llama, tiny_t5, tiny_bert):
    assert load_model(tiny_llama)[2] == "causal"
    assert load_model(tiny_t5)[2] == "seq2seq"
    assert load_model(tiny_bert)[2] == "encoder"
    with pytest.raises(ValueError, match="causal language model, not an encoder"):
        load_encoder(tiny_llama)


def test_causal_labels_are_the_answer_tokens_and_truncation_keeps_the_answer(tiny_llama):
    _, tokenizer, _ = load_model(tiny_llama)
    examples = load_task("piqa")[:6]
    long = Example("x:1", "what is it?", ("a", "the answer"), 1, context="word " * 200)
    data = encode([*examples, long], tokenizer, mode="causal", max_length=32)
    for i, example in enumerate([*examples, long]):
        n = int(data.attention_mask[i].sum())
        assert n <= 32 and not data.attention_mask[i, n:].any()
        predicted = data.labels[i] != IGNORE_INDEX
        # the labelled positions predict the next input token, and those tokens spell the answer
        positions = predicted.nonzero().flatten()
        assert torch.equal(data.labels[i, positions], data.input_ids[i, positions + 1])
        answer = prompt_and_answer(example)[1]
        assert tokenizer.decode(data.labels[i, positions]) == answer
    text = tokenizer.decode(data.input_ids[-1, : int(data.attention_mask[-1].sum())])
    assert text.endswith("Question: what is it?\nAnswer: the answer")  # the passage lost its beginning


def _brute_force_answer_loss(lm, input_ids, attention_mask, answer_start, answer_end) -> float:
    """Mean -log p(token) over the answer's tokens, one token at a time, from the unpadded sequence."""
    n = int(attention_mask.sum())
    ids = input_ids[:n].unsqueeze(0)
    total = 0.0
    for p in range(answer_start, answer_end):
        logits = lm(input_ids=ids[:, :p]).logits[0, -1].double()
        total -= float(torch.log_softmax(logits, -1)[ids[0, p]])
    return total / (answer_end - answer_start)


def test_causal_loss_is_the_mean_answer_token_cross_entropy(tiny_llama):
    lm, tokenizer, _ = load_model(tiny_llama)
    model = AnswerLM(lm, kind="causal").eval()
    examples = load_task("piqa")[:3]
    data = encode(examples, tokenizer, mode="causal", max_length=48)
    with torch.no_grad():
        ours = example_losses(model, data, batch_size=2)
        prebuilt = per_example_loss(model(**data.select(torch.arange(3)), prebuilt_mask=True), data.labels)
        for i in range(3):
            positions = (data.labels[i] != IGNORE_INDEX).nonzero().flatten() + 1
            expected = _brute_force_answer_loss(lm, data.input_ids[i], data.attention_mask[i],
                                                int(positions[0]), int(positions[-1]) + 1)
            assert float(ours[i]) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(prebuilt, ours, rtol=1e-6, atol=1e-6)


def test_scoring_at_the_answer_positions_equals_the_full_logits(tiny_llama, monkeypatch):
    """example_losses and option_scores run the output layer at the labelled positions only; their values are the
    full logits' cross-entropy (to float rounding), with trained LoRA adapters and a ragged batch."""
    from simflib import models
    from simflib.models import option_examples, option_scores

    lm, tokenizer, _ = load_model(tiny_llama)
    model = apply_method(AnswerLM(lm, kind="causal"), "lora").eval()
    assert lm.config.model_type in models.HEAD_ONLY_FAMILIES
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    examples = load_task("piqa")[:5]
    data = encode(examples, tokenizer, mode="causal", max_length=48)
    options = encode(option_examples(examples), tokenizer, mode="causal", max_length=48)
    calls = []
    decoder = model.lm.get_decoder()
    monkeypatch.setattr(decoder, "forward", lambda *a, _f=decoder.forward, **k: calls.append(1) or _f(*a, **k))
    with torch.no_grad():
        losses = example_losses(model, data, batch_size=2)
        scores = option_scores(model, options, n_options=2, batch_size=3)
        full_losses = per_example_loss(model(**data.select(torch.arange(5))), data.labels)
        logits = model(**options.select(torch.arange(10)))
        tokens = -torch.log_softmax(logits.double(), -1).gather(-1, options.labels[:, : logits.shape[1], None].clamp(min=0))
        full_scores = -(tokens[..., 0] * (options.labels[:, : logits.shape[1]] != IGNORE_INDEX)).sum(1).reshape(5, 2)
    assert len(calls) == 3 + 4 + 2  # the decoder alone ran for every batch of both scorers (then twice in full)
    torch.testing.assert_close(losses, full_losses, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores.double(), full_scores, rtol=1e-6, atol=1e-6)  # sums of ~100 nats in float32
    # a family not known to compute its logits this way gets the full logits
    monkeypatch.setattr(models, "HEAD_ONLY_FAMILIES", frozenset())
    calls.clear()
    with torch.no_grad():
        torch.testing.assert_close(example_losses(model, data, batch_size=2), losses, rtol=0, atol=1e-6)
    assert len(calls) == 3  # through the whole model (which runs the decoder too)


def test_seq2seq_loss_and_decoder_inputs_match_transformers(tiny_t5):
    lm, tokenizer, _ = load_model(tiny_t5)
    model = AnswerLM(lm, kind="seq2seq").eval()
    examples = load_task("siqa")[:3]
    data = encode(examples, tokenizer, mode="seq2seq", max_length=48, decoder_start=lm.config.decoder_start_token_id)
    # T5 shifts the labels right itself; ours are built while encoding
    torch.testing.assert_close(data.decoder_input_ids, lm._shift_right(data.labels))
    with torch.no_grad():
        ours = example_losses(model, data)
        for i in range(3):
            reference = lm(input_ids=data.input_ids[i : i + 1], attention_mask=data.attention_mask[i : i + 1],
                           labels=data.labels[i : i + 1]).loss
            assert float(ours[i]) == pytest.approx(float(reference), rel=1e-5)
    with pytest.raises(ValueError, match="decoder_input_ids are required"):
        model(data.input_ids, data.attention_mask)


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_t5"])
@pytest.mark.parametrize("method", ["full", "lora", "ia3"])
def test_language_model_runs_are_deterministic_and_move(tmp_path, request, model_fixture, method):
    cfg = _config(request.getfixturevalue(model_fixture), method=method)
    a = collect(cfg, tmp_path / "a", progress=False)
    b = collect(cfg, tmp_path / "b", progress=False)
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra.losses, rb.losses, rtol=0, atol=1e-6)
    assert np.abs(np.diff(a[0].losses, axis=0)).mean() > 1e-4
    setting = Setting(cfg)
    trainable = {n for n, p in setting.model.named_parameters() if p.requires_grad}
    if method == "full":
        assert trainable == {n for n, _ in setting.model.named_parameters()}
    else:
        assert trainable and all(method in n for n in trainable)  # adapters only; no head to train


def test_apply_method_refuses_a_bare_model(tiny_llama):
    lm, _, _ = load_model(tiny_llama)
    with pytest.raises(TypeError, match="needs a ChoiceModel or an AnswerLM, got LlamaForCausalLM"):
        apply_method(lm, "lora")


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_t5"])
def test_per_example_gradients_of_language_models_vmap_equals_loop(request, model_fixture):
    lm, tokenizer, kind = load_model(request.getfixturevalue(model_fixture))
    model = apply_method(AnswerLM(lm, kind=kind), "lora").double()
    data = encode(load_task("piqa")[:5], tokenizer, mode=kind, max_length=32, decoder_start=lm.config.pad_token_id)
    loop = per_example_gradients(model, data, method="loop", chunk_size=2)
    # a causal LM is vmapped (with its prebuilt 4-D mask); T5 may fall back to the loop
    auto = per_example_gradients(model, data, method="vmap" if kind == "causal" else "auto", chunk_size=2)
    assert loop.shape == (5, sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert loop.abs().sum() > 0
    torch.testing.assert_close(auto, loop, rtol=1e-6, atol=1e-8)


def test_smollm2_is_dequantised_once_into_the_cache(tmp_path, monkeypatch):
    """The embedded gguf model: dequantised on first use into $SIMFLIB_CACHE, read from there afterwards."""
    pytest.importorskip("gguf")
    from simflib import models

    monkeypatch.setenv("SIMFLIB_CACHE", str(tmp_path))
    path = models.resolve_model("smollm2")
    assert path.startswith(str(tmp_path)) and (tmp_path / path.split("/")[-1] / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    def no_second_time(*args, **kwargs):
        raise AssertionError("dequantised twice")

    monkeypatch.setattr(models, "_dequantise", no_second_time)
    assert models.resolve_model("smollm2") == path
    lm, tokenizer, kind = load_model("smollm2")
    assert kind == "causal" and 130e6 < sum(p.numel() for p in lm.parameters()) < 140e6
    # a pretrained model predicts real answers far better than a uniform guess over its vocabulary
    data = encode(load_task("piqa")[:4], tokenizer, mode="causal", max_length=64)
    with torch.no_grad():
        losses = example_losses(AnswerLM(lm, kind="causal").eval(), data)
    assert bool((losses < 0.8 * np.log(len(tokenizer))).all())
