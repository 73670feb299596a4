"""Per-step metrics beside the loss: greedy generations of generation tasks, option probabilities of choice tasks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from simflib.collect import CollectConfig, Setting, collect, regenerate  # noqa: E402
from simflib.models import (  # noqa: E402
    AnswerLM,
    ChoiceModel,
    greedy_generate,
    load_model,
    option_examples,
    prompt_and_answer,
)
from simflib.runs import RunSet  # noqa: E402
from simflib.tasks import XSUM_WORDS  # noqa: E402

pytestmark = pytest.mark.slow  # trains or loads real models


def _config(model: str, **kw) -> CollectConfig:
    base = dict(task="nq_open", model=model, method="lora", n_runs=1, n_pool=12, subset_size=8, epochs=1,
                m=5, lr=0.05, max_length=32, max_new_tokens=6, checkpoints=0)
    return CollectConfig(**{**base, **kw})


def _greedy_by_hand(lm, prompt: list[int], n: int, eos: int) -> list[int]:
    """Greedy decoding without a cache, batching or padding: the full forward pass at every token."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            token = int(lm(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token == eos:
                break
            out.append(token)
            ids.append(token)
    return out


def test_batched_cached_generation_equals_greedy_decoding_by_hand(tiny_llama):
    lm, tokenizer, _ = load_model(tiny_llama)
    model = AnswerLM(lm, kind="causal").eval()
    prompts = [tokenizer(t)["input_ids"] for t in ("Question: who?\nAnswer:", "a much longer prompt than that one", "x")]
    eos = tokenizer.eos_token_id
    ours = greedy_generate(model, prompts, max_new_tokens=7, eos_token_id=eos, pad_token_id=eos, batch_size=2)
    assert ours == [_greedy_by_hand(lm, p, 7, eos) for p in prompts]
    assert all(len(g) == 7 for g in ours)  # a random model never says end-of-sequence
    # Stopping: call the third token of the first generation the end-of-sequence token; decoding stops before it.
    stop = ours[0][2]
    cut = greedy_generate(model, prompts[:1], max_new_tokens=7, eos_token_id=stop, pad_token_id=eos)
    assert cut == [_greedy_by_hand(lm, prompts[0], 7, stop)] and len(cut[0]) <= 2


def test_generation_runs_record_reference_package_scores_of_their_generations(tmp_path, tiny_llama):
    from torchmetrics.functional.text import squad

    cfg = _config(tiny_llama)
    runs = collect(cfg, tmp_path, progress=False)
    run = runs[0]
    assert sorted(run.metrics) == ["exact_match", "f1"]
    assert run.generations is not None and run.generations.shape == (run.n_steps + 1, cfg.m, cfg.max_new_tokens)
    setting = Setting(cfg)
    for t in (0, run.n_steps):
        for i, example in enumerate(setting.test):
            ids = [x for x in run.generations[t, i].tolist() if x >= 0]
            text = setting.tokenizer.decode(ids, skip_special_tokens=True).strip()
            refs = list(example.references)
            expected = squad(
                [{"prediction_text": text, "id": "q"}],
                [{"answers": {"answer_start": [0] * len(refs), "text": refs}, "id": "q"}],
            )
            assert run.metrics["exact_match"][t, i] == float(expected["exact_match"]) / 100
            assert run.metrics["f1"][t, i] == float(expected["f1"]) / 100
    # Saved and loaded intact, and regenerated identically (generations) and to 1e-6 (losses).
    again = RunSet.load(tmp_path / "run-00000.npz")[0]
    np.testing.assert_array_equal(again.generations, run.generations)
    redo = regenerate(tmp_path, 0, device="cpu")
    np.testing.assert_array_equal(redo.generations, run.generations)
    np.testing.assert_allclose(redo.losses, run.losses, rtol=0, atol=1e-6)


def test_generation_targets_end_with_the_end_of_sequence_token(tiny_llama):
    setting = Setting(_config(tiny_llama))
    eos = setting.tokenizer.eos_token_id
    labels = setting.train_data.labels
    for row in labels:
        answer = row[row >= 0].tolist()
        assert answer[-1] == eos and eos not in answer[:-1]


def _log_likelihood_by_hand(lm, tokenizer, prompt: str, answer: str) -> float:
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=torch.tensor([p + a])).logits[0].double(), -1)
    return float(sum(logp[len(p) - 1 + j, token] for j, token in enumerate(a)))


def test_choice_metrics_of_a_language_model_are_the_softmax_of_option_likelihoods(tiny_llama):
    cfg = _config(tiny_llama, task="piqa", max_length=64)
    setting = Setting(cfg)
    losses, metrics, generations = setting.score()
    assert generations is None and sorted(metrics) == ["accuracy", "p_correct"]
    lm = setting.model.lm
    for i, example in enumerate(setting.test):
        scores = [_log_likelihood_by_hand(lm, setting.tokenizer, *prompt_and_answer(e))
                  for e in option_examples([example])]
        probability = np.exp(scores - np.logaddexp.reduce(scores))
        assert metrics["p_correct"][i] == pytest.approx(probability[example.label], abs=1e-5)
        answer = prompt_and_answer(example)[1]
        n_tokens = len(setting.tokenizer(answer, add_special_tokens=False)["input_ids"])
        assert losses[i] == pytest.approx(-scores[example.label] / n_tokens, abs=1e-5)  # the mean answer-token loss
        assert metrics["accuracy"][i] == float(np.argmax(scores) == example.label)


def test_choice_metrics_of_an_encoder_are_the_softmax_of_its_logits(tiny_bert):
    cfg = _config(tiny_bert, task="piqa", method="ia3", max_length=40)
    setting = Setting(cfg)
    losses, metrics, _ = setting.score()
    assert isinstance(setting.model, ChoiceModel)
    with torch.no_grad():
        logits = setting.model(**setting.test_data.select(torch.arange(cfg.m))).double()
    labels = setting.test_data.labels
    probability = torch.softmax(logits, 1)[torch.arange(cfg.m), labels].numpy()
    np.testing.assert_allclose(metrics["p_correct"], probability, atol=1e-6)
    np.testing.assert_array_equal(metrics["accuracy"], (logits.argmax(1) == labels).double().numpy())
    np.testing.assert_allclose(losses, -np.log(probability), atol=1e-5)


def test_a_generation_task_needs_a_language_model(tiny_bert):
    with pytest.raises(ValueError, match="needs a causal LM"):
        Setting(_config(tiny_bert, method="ia3"))


def test_a_learning_rate_sweep_records_each_rate_once_and_resumes(tmp_path, tiny_llama):
    from simflib.collect import sweep_learning_rates

    cfg = _config(tiny_llama, m=2)
    first = sweep_learning_rates(cfg, [0.01], tmp_path / "sweep.json")
    both = sweep_learning_rates(cfg, [0.01, 0.1], tmp_path / "sweep.json")
    assert first["rates"]["0.01"] == both["rates"]["0.01"]
    assert sorted(both["rates"]) == ["0.01", "0.1"]
    assert set(both["rates"]["0.1"]["mean"]) == {"loss", "exact_match", "f1"}
    with pytest.raises(ValueError, match="another setting"):
        sweep_learning_rates(_config(tiny_llama, m=3), [0.01], tmp_path / "sweep.json")


def test_summaries_are_scored_by_rouge_score_and_sacrebleu_directly(tiny_llama):
    import sacrebleu
    from rouge_score import rouge_scorer

    cfg = _config(tiny_llama, task="xsum", m=3, max_length=96, max_new_tokens=8)
    setting = Setting(cfg)
    losses, metrics, tokens = setting.score()
    assert sorted(metrics) == ["bleu", "rouge_l"] and len(tokens) == 3
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for i, example in enumerate(setting.test):
        text = setting.tokenizer.decode(tokens[i], skip_special_tokens=True).strip()
        summary = example.references[0]
        assert metrics["rouge_l"][i] == scorer.score(summary, text)["rougeL"].fmeasure
        assert metrics["bleu"][i] == sacrebleu.sentence_bleu(text, [summary]).score / 100
        assert len(example.context.split()) <= XSUM_WORDS  # the article is cut to its first XSUM_WORDS words


def test_tracin_cp_works_on_the_loss_of_a_generation_setting(tmp_path, tiny_llama):
    """TracIn-CP's hypothetical reductions of a generation setting are eta / b times the products of the per-example
    gradients of the answer-token loss (end-of-sequence token included), computed here one example at a time."""
    from simflib.tracin import hypothetical_reductions

    cfg = _config(tiny_llama, checkpoints=2, m=3, n_pool=6, subset_size=6)
    runs = collect(cfg, tmp_path, progress=False)
    setting = Setting(cfg)
    states = setting.checkpoints(0, steps=[0])
    _, reductions = hypothetical_reductions(setting, runs[0], states)
    model = setting.model
    params = [p for p in model.parameters() if p.requires_grad]

    def grad(data, i):
        from simflib.models import per_example_loss

        index = torch.tensor([i])
        loss = per_example_loss(model(**data.select(index)), data.labels[index]).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    model.load_state_dict(setting.initial)
    g_train = torch.stack([grad(setting.train_data, i) for i in range(cfg.n_pool)])
    g_test = torch.stack([grad(setting.test_data, j) for j in range(cfg.m)])
    expected = cfg.lr / cfg.batch_size * (g_train @ g_test.T).double().numpy()
    np.testing.assert_allclose(reductions[0], expected, rtol=1e-4, atol=1e-9)
