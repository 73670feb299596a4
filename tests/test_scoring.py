"""Text metrics: each checked against an independent computation (by hand, brute force), plus bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torchmetrics")
pytest.importorskip("rouge_score")
pytest.importorskip("sacrebleu")

from simflib.scoring import (  # noqa: E402
    CHOICE_METRICS,
    bleu,
    exact_match,
    rouge_l,
    score_texts,
    task_metrics,
    token_f1,
)


def test_exact_match_normalises_case_punctuation_and_articles():
    assert exact_match("The Nine.", ["nine"]) == 1.0
    assert exact_match("nine  geese", ["Nine Geese!"]) == 1.0
    assert exact_match("ten", ["nine", "Ten"]) == 1.0  # any reference
    assert exact_match("nine geese", ["nine"]) == 0.0


def test_token_f1_is_the_harmonic_mean_of_token_precision_and_recall():
    # prediction {x, y, z, w}, reference {y, z, v}: overlap 2, precision 2/4, recall 2/3
    expected = 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)
    assert token_f1("x y z w", ["y z v"]) == pytest.approx(expected, abs=1e-6)
    assert token_f1("x y z w", ["q", "y z v"]) == pytest.approx(expected, abs=1e-6)  # the best reference
    assert token_f1("x", ["y"]) == 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    """Longest common subsequence by brute force over the subsequences of the shorter list."""
    short, long = sorted((a, b), key=len)
    for size in range(len(short), 0, -1):
        for picked in itertools.combinations(short, size):
            it = iter(long)
            if all(token in it for token in picked):
                return size
    return 0


def test_rouge_l_is_the_lcs_f_measure():
    pred, ref = "police arrested the man on tuesday", "the man was arrested by police on tuesday"
    a, b = pred.split(), ref.split()
    lcs = _lcs(a, b)
    p, r = lcs / len(a), lcs / len(b)
    assert rouge_l(pred, [ref]) == pytest.approx(2 * p * r / (p + r), abs=1e-9)
    assert rouge_l(pred, ["nothing alike", ref]) == pytest.approx(2 * p * r / (p + r), abs=1e-9)


def test_bleu_of_an_exact_copy_is_one_and_of_disjoint_words_near_zero():
    sentence = "the council approved the new budget for local schools on monday"
    assert bleu(sentence, [sentence]) == pytest.approx(1.0)
    assert bleu("zebra quantum", [sentence]) < 0.05
    # unigram precision 1, no higher-order matches, brevity penalty: below the copy, above nothing
    assert 0 < bleu("the council approved", [sentence]) < 1


def test_score_texts_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown metric 'meteor'"):
        score_texts(["meteor"], ["a"], [["a"]], where="run 3")
    with pytest.raises(ValueError, match="test example 1 has no references"):
        score_texts(["exact_match"], ["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="2 generations but 1 reference"):
        score_texts(["f1"], ["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty sequence"):
        rouge_l("a", "a")


def test_score_texts_gives_each_metric_per_example():
    out = score_texts(["exact_match", "f1", "rouge_l", "bleu"], ["nine", "x y"], [["Nine"], ["y z"]])
    np.testing.assert_array_equal(out["exact_match"], [1.0, 0.0])
    assert out["f1"][1] == pytest.approx(0.5)
    assert set(task_metrics("nq_open")) == {"exact_match", "f1"} and task_metrics("piqa") == CHOICE_METRICS
