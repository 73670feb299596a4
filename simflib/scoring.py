"""Per-example metrics of a model's answers, recorded beside the loss after every training step.

A choice task (BoolQ, PIQA, SIQA, and the paper's originals) is scored on the model's option scores: the probability
it gives the correct option (``p_correct``, a softmax over the options' logits for an encoder, over the options'
summed token log-likelihoods for a language model) and whether the correct option scores highest (``accuracy``).
A generation task is scored on the model's greedy generation against the example's references, by the reference
packages, never by scorers of our own:

* ``exact_match`` and ``f1``: SQuAD's normalised exact match and token F1, the best over the references
  (``torchmetrics.functional.text.squad``, which follows the official SQuAD script);
* ``rouge_l``: ROUGE-L F-measure with Porter stemming, the best over the references (Google's ``rouge-score``);
* ``bleu``: sentence BLEU with sacrebleu's default exponential smoothing, against all references (``sacrebleu``).

Every metric lies in [0, 1] (BLEU and the SQuAD scores are divided by 100), so that simulators of bounded metrics
(:class:`simflib.simulators.OnMetric`) treat them alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHOICE_METRICS",
    "GENERATION_METRICS",
    "TEXT_METRICS",
    "bleu",
    "exact_match",
    "rouge_l",
    "score_texts",
    "task_metrics",
    "token_f1",
]

CHOICE_METRICS = ("p_correct", "accuracy")
"""Metrics of a choice task's test examples, from the option scores."""
GENERATION_METRICS: dict[str, tuple[str, ...]] = {
    "nq_open": ("exact_match", "f1"),
    "xsum": ("rouge_l", "bleu"),
}
"""Each generation task's metrics, by task name. Short answers are scored by exact match and token F1, summaries by
ROUGE-L and BLEU."""


def task_metrics(task: str) -> tuple[str, ...]:
    """The metric names recorded for a task's test examples (besides the loss)."""
    return GENERATION_METRICS.get(task.lower(), CHOICE_METRICS)


def _squad(prediction: str, references: Sequence[str]) -> dict[str, float]:
    from torchmetrics.functional.text import squad

    scores = squad(
        [{"prediction_text": prediction, "id": "0"}],
        [{"answers": {"answer_start": [0] * len(references), "text": list(references)}, "id": "0"}],
    )
    return {key: float(value) / 100.0 for key, value in scores.items()}


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 if the prediction equals a reference after SQuAD's normalisation (lower case, no punctuation, articles or
    extra white space), else 0.0."""
    return _squad(prediction, _checked(references))["exact_match"]


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD's token F1 between the normalised prediction and the best-matching reference, in [0, 1]."""
    return _squad(prediction, _checked(references))["f1"]


@functools.cache
def _rouge_scorer():  # type: ignore[no-untyped-def]
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed tokens), the best over the references."""
    return float(_rouge_scorer().score_multi(list(_checked(references)), prediction)["rougeL"].fmeasure)


def bleu(prediction: str, references: Sequence[str]) -> float:
    """Sentence BLEU (sacrebleu's defaults: 13a tokenisation, exponential smoothing) against all references, in
    [0, 1]."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, list(_checked(references))).score) / 100.0


def _checked(references: Sequence[str]) -> Sequence[str]:
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty sequence of strings, got {references!r}")
    return references


def _squad_pair(prediction: str, references: Sequence[str]) -> dict[str, float]:
    scores = _squad(prediction, references)
    return {"exact_match": scores["exact_match"], "f1": scores["f1"]}


TEXT_METRICS: Mapping[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": exact_match,
    "f1": token_f1,
    "rouge_l": rouge_l,
    "bleu": bleu,
}
"""Each generation metric by its recorded name."""


def score_texts(
    metrics: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]], *, where: str = "score"
) -> dict[str, NDArray[np.float64]]:
    """Score n generations against their references by each named metric.

    Args:
        metrics: Names from :data:`TEXT_METRICS`.
        predictions: n generated texts.
        references: n non-empty sequences of reference texts.
        where: Context for error messages (a setting, a run).

    Returns:
        ``{metric: (n,) array}``.

    Raises:
        ValueError: On an unknown metric name, a length mismatch, or an example without references, naming it.
    """
    unknown = [name for name in metrics if name not in TEXT_METRICS]
    if unknown:
        raise ValueError(f"{where}: unknown metric {unknown[0]!r}; generation metrics: {', '.join(TEXT_METRICS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{where}: {len(predictions)} generations but {len(references)} reference lists")
    out = {name: np.empty(len(predictions)) for name in metrics}
    for i, (prediction, refs) in enumerate(zip(predictions, references)):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"{where}: test example {i} has no references to score its generation against")
        squad = _squad_pair(prediction, refs) if {"exact_match", "f1"} & set(metrics) else {}
        for name in metrics:
            out[name][i] = squad[name] if name in squad else TEXT_METRICS[name](prediction, refs)
    return out
