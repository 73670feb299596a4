"""Time to build the book: every chapter from scratch, again with nothing changed, and after a one-sentence edit.

The three builds run one after the other in this process, on this machine (the cached builds are measured against
the scratch build of the same run). Per-chapter execution seconds come from the execution cache's entries. The
glued values of every chapter are compared between the scratch build and the cached ones (they must be identical).
The result goes to ``data/benchmarks/book-build.json`` (the cost chapter reads it).

Run on idle cores: ``python benchmarks/bench_book.py [--smoke] [--edit table2] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

import nbformat

from simflib import book, bookcache
from simflib.storage import atomic_write

OUT = book.ROOT / "data" / "benchmarks" / "book-build.json"


def glued(name: str) -> dict[str, str]:
    """The text values a chapter's executed notebook glued."""
    return book.glued_values(book.EXECUTED / f"{name}.ipynb")


def slowest_cells(name: str, k: int = 3) -> list[dict[str, Any]]:
    """The chapter's k slowest code cells in its last execution (papermill's per-cell durations): a profile at
    the granularity a reader sees."""
    notebook = nbformat.read(book.EXECUTED / f"{name}.ipynb", as_version=4)
    cells = []
    for index, cell in enumerate(notebook.cells):
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell.cell_type == "code" and duration is not None:
            lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith(("#", ":"))]
            cells.append({"cell": index, "seconds": float(duration), "first_line": lines[0] if lines else ""})
    return sorted(cells, key=lambda c: -c["seconds"])[:k]


def timed_build(**options: Any) -> float:
    start = time.perf_counter()
    code = book.build(**options)
    if code != 0:
        sys.exit(f"the build failed (exit {code}) with {options}")
    return time.perf_counter() - start


def edit_one_sentence(path: Path) -> str:
    """Append a sentence to the chapter's first paragraph of prose; returns the original text."""
    text = path.read_text()
    title_end = text.index("\n", text.index("\n# ")) + 1
    paragraph_end = text.index("\n\n", title_end + 1)
    path.write_text(text[:paragraph_end] + " This sentence was added by the build benchmark." + text[paragraph_end:])
    return text


def _write(text: str, f: IO[bytes]) -> None:
    f.write(text.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the smoke edition's parameters")
    parser.add_argument("--edit", default="table2", help="the chapter whose prose is edited")
    parser.add_argument("--threads", type=int, default=None, help="threads per chapter (default: every core)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    options = {"smoke": args.smoke, "threads": args.threads}
    scratch = timed_build(cache=False, **options)
    chapters = book.chapters()
    seconds = {
        name: json.loads(bookcache.cache_path(book.EXECUTED / f"{name}.ipynb").read_text())["seconds"]
        for name in chapters
    }
    before = {name: glued(name) for name in chapters}
    profile = {name: slowest_cells(name) for name in chapters}
    cached = timed_build(**options)
    path = book.BOOK / f"{args.edit}.md"
    original = edit_one_sentence(path)
    try:
        edited = timed_build(**options)
    finally:
        path.write_text(original)
    after = {name: glued(name) for name in chapters}
    differ = sorted(name for name in chapters if before[name] != after[name])
    if differ:
        sys.exit(f"glued values differ between the scratch and the cached builds: {differ}")
    timed_build(**options)  # the book as committed again
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "edition": "smoke" if args.smoke else "full",
        "threads": args.threads or os.cpu_count(),
        "chapter_seconds": seconds,
        "slowest_cells": profile,
        "scratch_seconds": scratch,
        "cached_seconds": cached,
        "edited_chapter": args.edit,
        "edited_seconds": edited,
        "glued_values_identical": True,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, partial(_write, json.dumps(result, indent=1) + "\n"))
    print(f"scratch {scratch:.0f} s; nothing changed {cached:.0f} s; one sentence of {args.edit} {edited:.0f} s")
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20s} {s:7.1f} s")


if __name__ == "__main__":
    main()
