"""Task loaders: the embedded stand-ins, and the originals read from fixture files written here."""

from __future__ import annotations

import json

import pytest

from simflib.tasks import load_task, pool_and_test


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_embedded_tasks_load_with_their_sizes():
    sizes = {"boolq": 3270, "piqa": 1500, "siqa": 1954}
    for name, size in sizes.items():
        examples = load_task(name)
        assert len(examples) == size
        k = {"boolq": 2, "piqa": 2, "siqa": 3}[name]
        assert all(len(e.options) == k and 0 <= e.label < k for e in examples)
    first = load_task("siqa")[0]
    assert first.options == ("make a new plan", "Go home and see Riley", "Find somewhere to go") and first.label == 2


def test_originals_from_a_local_folder(tmp_path):
    rte, copa, wino = tmp_path / "rte", tmp_path / "copa", tmp_path / "wino"
    for d in (rte, copa, wino):
        d.mkdir()
    _write(rte / "val.jsonl", [
        {"premise": "A cat sat.", "hypothesis": "An animal sat.", "label": "entailment", "idx": 0},
        {"premise": "A cat sat.", "hypothesis": "A dog sat.", "label": "not_entailment", "idx": 1},
    ])
    _write(copa / "val.jsonl", [
        {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.", "question": "cause", "label": 0},
    ])
    _write(wino / "dev.jsonl", [
        {"sentence": "The trophy didn't fit in the case because _ was big.", "option1": "trophy", "option2": "case", "answer": "1"},
        {"sentence": "Unlabelled _ here.", "option1": "a", "option2": "b", "answer": ""},
    ])
    r = load_task("rte", data_dir=rte)
    assert [e.label for e in r] == [0, 1] and r[0].options == ("yes", "no") and r[0].context == "A cat sat."
    c = load_task("copa", data_dir=copa)[0]
    assert c.options == ("He slipped.", "He sang.") and c.question == "What was the cause?" and c.label == 0
    w = load_task("winogrande", data_dir=wino)
    assert len(w) == 1 and w[0].label == 0


def test_bad_files_name_file_and_line(tmp_path):
    (tmp_path / "val.jsonl").write_text('{"premise": "x", "hypothesis": "y", "label": 0}\n{not json\n')
    with pytest.raises(ValueError, match=r"val.jsonl, line 2: cannot read a rte example"):
        load_task("rte", data_dir=tmp_path)
    with pytest.raises(ValueError, match="none of"):
        load_task("copa", data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown task 'mnli'"):
        load_task("mnli")


def test_pool_and_test_are_disjoint_seeded_and_checked():
    examples = load_task("piqa")
    pool, test = pool_and_test(examples, n_pool=100, m=50, seed=0)
    assert len(pool) == 100 and len(test) == 50 and not {e.uid for e in pool} & {e.uid for e in test}
    assert [e.uid for e in pool_and_test(examples, n_pool=100, m=50, seed=0)[1]] == [e.uid for e in test]
    with pytest.raises(ValueError, match="fewer than n_pool \\+ m"):
        pool_and_test(examples, n_pool=1500, m=100, seed=0)


def test_extra_pool_examples_extend_the_pool_and_keep_the_test_examples():
    examples = load_task("piqa")
    pool, test = pool_and_test(examples, n_pool=100, m=50, seed=0)
    wider, same_test = pool_and_test(examples, n_pool=100, m=50, seed=0, n_extra=10)
    assert [e.uid for e in wider[:100]] == [e.uid for e in pool] and len(wider) == 110
    assert [e.uid for e in same_test] == [e.uid for e in test]
    assert not {e.uid for e in wider} & {e.uid for e in test}
    assert len({e.uid for e in wider}) == 110
    with pytest.raises(ValueError, match="n_extra"):
        pool_and_test(examples, n_pool=100, m=50, seed=0, n_extra=len(examples))
