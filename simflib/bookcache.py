"""The book's execution cache: a chapter is re-executed only when something it computes from has changed.

What a chapter's results depend on, and what the cache compares (stored beside the executed notebook, in
``_build/executed/<chapter>.cache.json``):

- its code: the sources of its code cells, in order (prose, tags and captions are not code: editing them re-uses the
  outputs, which are merged into the edited chapter, :func:`merge_outputs`);
- its parameters (the smoke build's overrides, or none);
- the library: every file of the ``simflib`` package and ``pyproject.toml`` (the pinned versions), by content;
- the data it read: every file under the repository that the chapter's kernel opened for reading, and every folder
  it listed, recorded while it ran by an audit hook (:data:`simflib.bookcache.RECORD_CELL`), by content (folders: by their names).

A chapter whose last execution failed is never reused. :func:`stale_reasons` says why a chapter must run again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CACHE_TAG",
    "RECORD_CELL",
    "WRITE_CELL",
    "cache_path",
    "code_digest",
    "library_digests",
    "merge_outputs",
    "parameters_digest",
    "path_digest",
    "save_entry",
    "stale_reasons",
    "strip_cache_cells",
]

VERSION = 1
CACHE_TAG = "simflib-cache"
"""Tag of the cells the build adds around a chapter to record what it reads (removed after execution)."""

RECORD_CELL = """\
import os as _os, sys as _sys
_simflib_reads, _simflib_listed = set(), set()
_simflib_root = {root!r}
_simflib_threads = {threads!r}
if _simflib_threads:
    _os.environ["OMP_NUM_THREADS"] = str(_simflib_threads)


def _simflib_audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, _os.PathLike)):
        mode, flags = (args[1] or ""), (args[2] or 0)
        if any(c in mode for c in "wax+") or flags & (_os.O_WRONLY | _os.O_RDWR):
            return
        _simflib_reads.add(_os.path.abspath(_os.fsdecode(args[0])))
    elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, _os.PathLike)):
        _simflib_listed.add(_os.path.abspath(_os.fsdecode(args[0])))


_sys.addaudithook(_simflib_audit)
"""
"""The first cell of a chapter executed for the cache. Its audit hook records every file opened for reading and every
folder listed; it also sets the threads of the numerical libraries (``threads``, before they are imported)."""

WRITE_CELL = """\
import json as _json
with open({out!r}, "w") as _f:
    _json.dump({{"reads": sorted(_simflib_reads), "listed": sorted(_simflib_listed)}}, _f)
"""
"""The last cell of a chapter executed for the cache. It writes what :data:`simflib.bookcache.RECORD_CELL` recorded."""

# Files the library digest covers, or that change on every build: never counted as data.
_NOT_DATA = ("simflib", "_build", ".venv", ".git", "book", "pyproject.toml")


def cache_path(executed: Path) -> Path:
    """Where the cache entry of an executed notebook lives."""
    return executed.with_suffix(".cache.json")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_digest(notebook: Any) -> str:
    """Digest of a chapter's code: its code cells' sources, in order (the cache cells excluded)."""
    sources = [
        cell.source
        for cell in notebook.cells
        if cell.cell_type == "code" and CACHE_TAG not in cell.get("metadata", {}).get("tags", [])
    ]
    return _sha(json.dumps(sources).encode())


def parameters_digest(parameters: Mapping[str, Any] | None) -> str:
    """Digest of the parameter overrides (none: the chapter's defaults)."""
    return _sha(json.dumps(dict(parameters or {}), sort_keys=True, default=repr).encode())


def library_digests(root: Path) -> dict[str, str]:
    """``{relative path: digest}`` of every file of the ``simflib`` package and of ``pyproject.toml``."""
    files = sorted(p for p in (root / "simflib").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files.append(root / "pyproject.toml")
    return {str(p.relative_to(root)): _sha(p.read_bytes()) for p in files if p.is_file()}


def path_digest(path: Path, *, listing: bool = False) -> str | None:
    """Digest of a file's content, or of a folder's sorted entry names (``listing``); None if it is gone."""
    try:
        if listing:
            return _sha("\n".join(sorted(p.name for p in path.iterdir())).encode())
        return _sha(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _data_paths(paths: Sequence[str], root: Path) -> list[str]:
    """The recorded paths that are data of the repository: inside it, outside the library and the build."""
    kept = []
    for text in paths:
        path = Path(text)
        try:
            relative = path.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        if relative.parts and relative.parts[0] in _NOT_DATA and not _is_book_data(relative):
            continue
        kept.append(str(relative))
    return sorted(set(kept))


def _is_book_data(relative: Path) -> bool:
    return len(relative.parts) > 1 and relative.parts[0] == "book" and relative.parts[1] == "data"


def save_entry(
    executed: Path,
    *,
    root: Path,
    code: str,
    parameters: str,
    library: Mapping[str, str],
    recorded: Path,
    seconds: float,
) -> Path:
    """Write the cache entry of a chapter that ran without error, from the reads its kernel recorded.

    Args:
        executed: The executed notebook.
        root: The repository root.
        code: :func:`code_digest` of the chapter as executed.
        parameters: :func:`parameters_digest` of its overrides.
        library: :func:`library_digests` at execution.
        recorded: The JSON file the chapter's :data:`simflib.bookcache.WRITE_CELL` wrote.
        seconds: Execution time.

    Returns:
        The entry's path.
    """
    from simflib.storage import atomic_write

    seen = json.loads(recorded.read_text())
    reads = {p: path_digest(root / p) for p in _data_paths(seen["reads"], root)}
    listed = {p: path_digest(root / p, listing=True) for p in _data_paths(seen["listed"], root)}
    entry = {
        "version": VERSION,
        "python": sys.version.split()[0],
        "code": code,
        "parameters": parameters,
        "library": dict(library),
        "reads": {p: h for p, h in reads.items() if h is not None},
        "listed": {p: h for p, h in listed.items() if h is not None},
        "seconds": seconds,
    }
    path = cache_path(executed)
    atomic_write(path, partial(_write_text, json.dumps(entry, indent=1, sort_keys=True)))
    return path


def _write_text(text: str, f: IO[bytes]) -> None:
    f.write(text.encode())


def _names(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def stale_reasons(
    executed: Path,
    *,
    root: Path,
    code: str,
    parameters: str,
    library: Mapping[str, str],
    failed: bool,
) -> list[str]:
    """Why a chapter must be executed again; empty when its cached execution can be reused.

    Args:
        executed: Its executed notebook (the cache entry lies beside it).
        root: The repository root.
        code: :func:`code_digest` of the chapter now.
        parameters: :func:`parameters_digest` of the overrides now.
        library: :func:`library_digests` now.
        failed: Whether the executed notebook records an error.
    """
    entry_path = cache_path(executed)
    if not executed.is_file() or not entry_path.is_file():
        return ["no cached execution"]
    if failed:
        return ["its last execution failed"]
    try:
        entry = json.loads(entry_path.read_text())
    except (OSError, ValueError):
        return [f"its cache entry {entry_path.name} cannot be read"]
    if entry.get("version") != VERSION or entry.get("python") != sys.version.split()[0]:
        return ["the cache entry is from another version of the cache or of Python"]
    reasons = []
    if entry.get("code") != code:
        reasons.append("its code cells changed")
    if entry.get("parameters") != parameters:
        reasons.append("its parameters changed")
    before = entry.get("library", {})
    changed = sorted(p for p in set(before) | set(library) if before.get(p) != library.get(p))
    if changed:
        reasons.append(f"the library changed ({_names(changed)})")
    data = sorted(p for p, h in entry.get("reads", {}).items() if path_digest(root / p) != h)
    if data:
        reasons.append(f"data it read changed ({_names(data)})")
    folders = sorted(p for p, h in entry.get("listed", {}).items() if path_digest(root / p, listing=True) != h)
    if folders:
        reasons.append(f"folders it listed changed ({_names(folders)})")
    return reasons


def strip_cache_cells(notebook: Any) -> Any:
    """The executed notebook without the cells the build added to record what the chapter read."""
    notebook.cells = [c for c in notebook.cells if CACHE_TAG not in c.get("metadata", {}).get("tags", [])]
    return notebook


def merge_outputs(source: Any, executed: Any) -> Any:
    """The chapter as it reads now (``source``, its prose and cell tags) with the outputs of its cached execution.

    Both must have the same code cells (the cache compared :func:`code_digest`). Papermill's injected-parameters
    cell is kept after the parameters cell.

    Raises:
        ValueError: If the code cells differ.
    """
    import copy

    injected = [c for c in executed.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    ran = [
        c
        for c in executed.cells
        if c.cell_type == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]
    code = [c for c in source.cells if c.cell_type == "code"]
    if [c.source for c in code] != [c.source for c in ran]:
        raise ValueError("merge_outputs: the chapter's code cells differ from the executed notebook's")
    merged = copy.deepcopy(executed)
    cells = []
    outputs = iter(ran)
    for cell in source.cells:
        new = copy.deepcopy(cell)
        if cell.cell_type == "code":
            done = next(outputs)
            new["outputs"] = copy.deepcopy(done.get("outputs", []))
            new["execution_count"] = done.get("execution_count")
            new["metadata"] = {**done.get("metadata", {}), **cell.get("metadata", {})}
        cells.append(new)
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            cells.extend(copy.deepcopy(injected))
    merged.cells = cells
    return merged
