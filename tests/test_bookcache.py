"""The book's execution cache (simflib.bookcache): what makes a chapter run again, and what a re-used one shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

from simflib import book, bookcache


def _chapter(prose: str = "Some prose.", code: str = "x = 1") -> nbformat.NotebookNode:
    params = nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]})
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Title"), params, nbformat.v4.new_markdown_cell(prose),
               nbformat.v4.new_code_cell(code)]
    )


def test_code_digest_sees_code_only():
    base = bookcache.code_digest(_chapter())
    assert bookcache.code_digest(_chapter(prose="Other prose, same code.")) == base
    assert bookcache.code_digest(_chapter(code="x = 2")) != base
    tagged = _chapter()
    tagged.cells[3].metadata["tags"] = ["hide-input"]
    assert bookcache.code_digest(tagged) == base  # folding a cell changes no result


def test_parameters_digest_is_order_free_and_tells_values_apart():
    assert bookcache.parameters_digest({"a": 1, "b": [2]}) == bookcache.parameters_digest({"b": [2], "a": 1})
    assert bookcache.parameters_digest({"a": 1}) != bookcache.parameters_digest({"a": 2})
    assert bookcache.parameters_digest(None) == bookcache.parameters_digest({})


def _entry(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "repo"
    (root / "data" / "runs" / "s").mkdir(parents=True)
    (root / "simflib").mkdir()
    (root / "simflib" / "a.py").write_text("A = 1\n")
    (root / "pyproject.toml").write_text("[project]\n")
    run = root / "data" / "runs" / "s" / "run-00000.npz"
    run.write_bytes(b"run zero")
    executed = root / "_build" / "executed" / "ch.ipynb"
    executed.parent.mkdir(parents=True)
    nbformat.write(_chapter(), executed)
    recorded = tmp_path / "reads.json"
    outside = tmp_path / "elsewhere.txt"  # read, but not the repository's data
    recorded.write_text(json.dumps({"reads": [str(run), str(outside), str(root / "simflib" / "a.py")],
                                    "listed": [str(run.parent)]}))
    digests = {"code": bookcache.code_digest(_chapter()), "parameters": bookcache.parameters_digest({"n": 1}),
               "library": bookcache.library_digests(root)}
    bookcache.save_entry(executed, root=root, recorded=recorded, seconds=1.0, **digests)
    return executed, {"root": root, **digests, "failed": False}


def test_an_unchanged_chapter_is_reused_and_each_change_is_named(tmp_path):
    executed, now = _entry(tmp_path)
    root = now["root"]
    entry = json.loads(bookcache.cache_path(executed).read_text())
    assert list(entry["reads"]) == ["data/runs/s/run-00000.npz"]  # library files and outside paths are not data
    assert list(entry["listed"]) == ["data/runs/s"]
    assert bookcache.stale_reasons(executed, **now) == []
    assert bookcache.stale_reasons(executed, **{**now, "code": "other"}) == ["its code cells changed"]
    assert bookcache.stale_reasons(executed, **{**now, "parameters": "other"}) == ["its parameters changed"]
    assert bookcache.stale_reasons(executed, **{**now, "failed": True}) == ["its last execution failed"]
    (root / "simflib" / "a.py").write_text("A = 2\n")
    library = bookcache.library_digests(root)
    assert bookcache.stale_reasons(executed, **{**now, "library": library}) == ["the library changed (simflib/a.py)"]
    (root / "data" / "runs" / "s" / "run-00001.npz").write_bytes(b"a new run")
    assert bookcache.stale_reasons(executed, **now) == ["folders it listed changed (data/runs/s)"]
    (root / "data" / "runs" / "s" / "run-00000.npz").write_bytes(b"run zero, recorded again")
    assert bookcache.stale_reasons(executed, **now)[0] == "data it read changed (data/runs/s/run-00000.npz)"
    bookcache.cache_path(executed).unlink()
    assert bookcache.stale_reasons(executed, **now) == ["no cached execution"]


def test_a_corrupt_entry_is_not_trusted(tmp_path):
    executed, now = _entry(tmp_path)
    bookcache.cache_path(executed).write_text("{")
    assert "cannot be read" in bookcache.stale_reasons(executed, **now)[0]


def test_merge_outputs_keeps_outputs_and_takes_the_new_prose_and_tags():
    executed = _chapter()
    injected = nbformat.v4.new_code_cell("n = 5", metadata={"tags": ["injected-parameters"]})
    executed.cells.insert(2, injected)
    executed.cells[-1].outputs = [nbformat.v4.new_output("display_data", {"text/plain": "1"})]
    edited = _chapter(prose="Better prose.")
    edited.cells[3].metadata["tags"] = ["hide-input"]
    merged = bookcache.merge_outputs(edited, executed)
    assert [c.source for c in merged.cells] == ["# Title", "n = 3", "n = 5", "Better prose.", "x = 1"]
    assert merged.cells[-1].outputs == executed.cells[-1].outputs
    assert merged.cells[-1].metadata["tags"] == ["hide-input"]
    with pytest.raises(ValueError, match="code cells differ"):
        bookcache.merge_outputs(_chapter(code="x = 2"), executed)


@pytest.mark.slow
def test_a_chapter_records_the_data_it_reads_and_keeps_no_trace_of_it(tmp_path):
    params = book.smoke_parameters()["simfluence_linear"]
    record = tmp_path / "reads.json"
    out = book.run_chapter("simfluence_linear", params, output_dir=tmp_path, record=record, threads=1)
    seen = json.loads(record.read_text())
    setting = params.get("setting", "boolq-minilm-ia3")
    runs = (book.ROOT / "data" / "runs" / setting).resolve()
    assert any(Path(p).resolve() == runs / "run-00000.npz" for p in seen["reads"])
    assert any(Path(p).resolve() == runs for p in seen["listed"])
    executed = nbformat.read(out, as_version=4)
    assert not [c for c in executed.cells if bookcache.CACHE_TAG in c.metadata.get("tags", [])]
    source = jupytext.read(book.BOOK / "simfluence_linear.md")
    assert bookcache.merge_outputs(source, executed).cells[-1].source == source.cells[-1].source
    # The cache entry, from a copy of the repository's data the chapter read: a change to any of them is seen.
    root, here = tmp_path / "repo", book.ROOT.resolve()
    copied: dict[str, list[str]] = {"reads": [], "listed": []}
    for kind in ("reads", "listed"):
        for path in map(Path, seen[kind]):
            if not path.resolve().is_relative_to(here / "data"):
                continue
            target = root / path.resolve().relative_to(here)
            if kind == "reads":
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            copied[kind].append(str(target))
    assert copied["reads"] and copied["listed"]
    (tmp_path / "copied.json").write_text(json.dumps(copied))
    (root / "simflib").mkdir()
    library = bookcache.library_digests(root)
    bookcache.save_entry(out, root=root, code="c", parameters="p", library=library, recorded=tmp_path / "copied.json",
                         seconds=1.0)
    now = {"root": root, "code": "c", "parameters": "p", "library": library, "failed": False}
    assert bookcache.stale_reasons(out, **now) == []
    target = root / "data" / "runs" / setting / "run-00000.npz"
    target.write_bytes(target.read_bytes() + b"\0")
    assert bookcache.stale_reasons(out, **now) == [f"data it read changed (data/runs/{setting}/run-00000.npz)"]


def test_the_record_cells_see_reads_and_listings_not_writes_and_set_the_threads(tmp_path):
    """The two cells run in a fresh interpreter (an audit hook cannot be removed from the test process)."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "read.txt").write_text("x")
    out = tmp_path / "seen.json"
    program = "\n".join([
        bookcache.RECORD_CELL.format(root=str(tmp_path), threads=3),
        f"open({str(data / 'read.txt')!r}).read()",
        f"open({str(data / 'written.txt')!r}, 'w').write('y')",
        f"sorted(_os.listdir({str(data)!r}))",
        "print(_os.environ['OMP_NUM_THREADS'])",
        bookcache.WRITE_CELL.format(out=str(out)),
    ])
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "3"
    seen = json.loads(out.read_text())
    assert str(data / "read.txt") in seen["reads"] and str(data / "written.txt") not in seen["reads"]
    assert str(data) in seen["listed"]  # everything is recorded; save_entry keeps the repository's data
