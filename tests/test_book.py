"""The book's form: jupytext chapters without outputs, a parameters cell each, papermill overrides that apply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jupytext  # the book extra is part of the test environment (make install): a missing one fails, not skips
import pytest

from simflib import book


def test_chapters_are_jupytext_markdown_with_a_parameters_cell():
    names = book.chapters()
    assert {"simulation_task", "data_requirements"} <= set(names)
    for name in names:
        nb = jupytext.read(book.BOOK / f"{name}.md")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: exactly one cell must be tagged 'parameters'"
        assert book._declared_parameters(nb, name), f"{name}: the parameters cell assigns nothing"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_no_notebooks_or_outputs_are_committed():
    tracked = subprocess.run(["git", "ls-files", "book"], capture_output=True, text=True, cwd=book.ROOT).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith(".ipynb")], "commit chapters as jupytext .md, not .ipynb"


def test_smoke_parameters_exist_in_their_chapters_with_their_defaults_types():
    for name, params in book.smoke_parameters().items():
        nb = jupytext.read(book.BOOK / f"{name}.md")
        book.check_parameters(name, params, book._declared_parameters(nb, name))


def test_a_parameter_of_the_wrong_type_is_refused_before_execution(tmp_path):
    """Finding: -p n_train abc failed deep inside the chapter instead of at the parameter."""
    with pytest.raises(ValueError, match=r"parameter 'n_train' takes a int like its default 100, got 'abc'"):
        book.run_chapter("simulation_task", {"n_train": "abc"}, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"parameter 'n_fit' takes a int"):  # a tuple assignment's element
        book.run_chapter("simulation_task", {"n_fit": 2.5}, output_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    declared = {"lr": 0.1, "grid": [1.0], "steps": None, "name": "x", "flag": True}
    book.check_parameters("c", {"lr": 1, "grid": [2.0, 3.0], "steps": [0, 63], "name": "y", "flag": False}, declared)
    for bad in ({"lr": "fast"}, {"grid": 1.0}, {"name": 3}, {"flag": 1}):
        with pytest.raises(ValueError, match=f"parameter '{next(iter(bad))}'"):
            book.check_parameters("c", bad, declared)


def test_a_path_is_not_a_chapter(tmp_path):
    """Finding: book run ../../x.md executed a file outside book/."""
    outside = tmp_path / "x.md"
    outside.write_text(book.BOOK.joinpath("simulation_task.md").read_text())
    relative = Path("..") / Path(*[".."] * len(book.BOOK.parts)) / outside.relative_to("/")
    for name in (str(relative.with_suffix("")), "../book/simulation_task", "glossary"):
        with pytest.raises(ValueError, match="no chapter"):
            book.run_chapter(name, output_dir=tmp_path / "out")


def test_a_failed_execution_is_never_reused(tmp_path):
    """Finding: build --reuse reused a notebook whose execution failed, and returned 0."""
    import nbformat

    good, failed, flagged = (tmp_path / f"{k}.ipynb" for k in ("good", "failed", "flagged"))
    cell = nbformat.v4.new_code_cell("1")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=1)]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), good)
    broken = nbformat.v4.new_code_cell("1/0")
    broken.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nbformat.write(nbformat.v4.new_notebook(cells=[broken]), failed)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    notebook.metadata["papermill"] = {"exception": True}
    nbformat.write(notebook, flagged)
    assert not book.execution_failed(good)
    assert book.execution_failed(failed) and book.execution_failed(flagged)
    (tmp_path / "garbage.ipynb").write_text("{")
    assert book.execution_failed(tmp_path / "garbage.ipynb")


def test_unknown_chapter_or_parameter_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no chapter 'nope'"):
        book.run_chapter("nope", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['n_trian'\]"):
        book.run_chapter("simulation_task", {"n_trian": 5}, output_dir=tmp_path)


@pytest.mark.slow
def test_a_chapter_runs_under_papermill_with_overrides(tmp_path):
    params = dict(book.smoke_parameters()["simulation_task"], seed=7)
    out = book.run_chapter("simulation_task", params, output_dir=tmp_path)
    nb = json.loads(out.read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "seed = 7" in "".join(injected[0]["source"])
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # The glued number of steps follows the overridden protocol: ceil(20 / 4) * 4 epochs = 20 steps.
    glued = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook", {}).get("name") == "T"]
    assert glued and glued[0]["data"]["application/papermill.record/text/plain"] == "20"


def test_parse_value_reads_yaml_scalars_and_lists():
    assert book._parse_value("3") == 3 and book._parse_value("1e-3") == 1e-3
    assert book._parse_value("[1, 2]") == [1, 2] and book._parse_value("true") is True


def test_student_edition_strips_gated_solutions():
    nbformat = pytest.importorskip("nbformat")
    cells = [
        nbformat.v4.new_markdown_cell("Intro\n```{exercise-end}\n```\n\n```{solution-start} ex\n:class: dropdown\n```\nAnswer text"),
        nbformat.v4.new_code_cell("secret = 42"),
        nbformat.v4.new_markdown_cell("```{solution-end}\n```\nAfter the solution."),
        nbformat.v4.new_code_cell("visible = 1"),
    ]
    kept = book.strip_solutions(cells)
    text = "".join(c.source for c in kept)
    assert "secret" not in text and "Answer text" not in text and "solution-start" not in text
    assert "Intro" in text and "After the solution." in text and "visible = 1" in text
    with pytest.raises(ValueError, match="no matching solution-end"):
        book.strip_solutions([nbformat.v4.new_markdown_cell("```{solution-start} ex\n```\nx")])


def test_launch_buttons_get_the_repository_when_one_is_known(monkeypatch, tmp_path):
    yaml = pytest.importorskip("yaml")
    monkeypatch.setenv("SIMFLIB_REPOSITORY_URL", "git@github.com:someone/simflib.git")
    assert book.repository_url() == "https://github.com/someone/simflib"
    config = yaml.safe_load(book._build_config(student=False, mathjax=None, out_dir=tmp_path).read_text())
    assert config["repository"]["url"] == "https://github.com/someone/simflib"
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert config["repository"]["branch"] == book.NOTEBOOK_BRANCH
    assert "simflib._launch" in config["sphinx"]["extra_extensions"]
    monkeypatch.setenv("SIMFLIB_REPOSITORY_URL", "file:///local/only")
    assert book.repository_url() is None
    config = yaml.safe_load(book._build_config(student=False, mathjax=None, out_dir=tmp_path).read_text())
    assert "launch_buttons" not in config and "repository" not in config


def test_notebooks_are_the_chapters_behind_a_setup_cell(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    url = "https://github.com/someone/simflib"
    written = book.write_notebooks(tmp_path, url=url)
    assert [p.stem for p in written] == book.chapters()
    for path in written:
        nb = nbformat.read(path, as_version=4)
        setup, rest = nb.cells[0], nb.cells[1:]
        assert setup.metadata["tags"] == ["simflib-setup"]
        compile(setup.source, str(path), "exec")  # valid Python
        assert url in setup.source and repr(book.NOTEBOOK_BRANCH) in setup.source
        source = jupytext.read(book.BOOK / f"{path.stem}.md")
        assert [c.source for c in rest] == [c.source for c in source.cells]
        assert all(not c.outputs for c in rest if c.cell_type == "code")


def test_notebooks_need_a_repository(monkeypatch, tmp_path):
    monkeypatch.setattr(book, "repository_url", lambda: None)
    with pytest.raises(ValueError, match="no repository URL"):
        book.write_notebooks(tmp_path)


@pytest.mark.slow
def test_built_launch_buttons_open_the_notebooks(tmp_path):
    """A one-chapter jupyter-book build: Binder and Colab must link the chapter's .ipynb on the notebooks branch."""
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("jupyter_book")
    src = tmp_path / "src"
    src.mkdir()
    (src / "chapter.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "# A chapter\n\n```{code-cell} ipython3\n1 + 1\n```\n"
    )
    (src / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    config = {
        "title": "t", "execute": {"execute_notebooks": "off"},
        "repository": {"url": "https://github.com/someone/simflib", "path_to_book": "book",
                       "branch": book.NOTEBOOK_BRANCH},
        "launch_buttons": {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com",
                           "notebook_interface": "jupyterlab"},
        "sphinx": {"extra_extensions": ["simflib._launch"]},
    }
    (src / "_config.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(src), "--path-output", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=book.ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    html = (tmp_path / "out" / "_build" / "html" / "chapter.html").read_text()
    colab = "https://colab.research.google.com/github/someone/simflib/blob/notebooks/book/chapter.ipynb"
    binder = "https://mybinder.org/v2/gh/someone/simflib/notebooks?urlpath=lab/tree/book/chapter.ipynb"
    assert colab in html and binder in html
    assert "book/chapter.md" not in html.replace("_sources/chapter.md", "")


# What a reader sees (CONTRIBUTING.md, "What a reader sees"): code that only draws, builds tables or glues is
# folded; the parameters cell and the cells that use simflib stay open.
PRESENTATION_CALLS = ("report.figure(", "report.glue_figure(", "plt.", "sns.")


def _code_cells(name):
    return [cell for cell in jupytext.read(book.BOOK / f"{name}.md").cells if cell.cell_type == "code"]


def _only_glue(source: str) -> bool:
    import ast

    body = ast.parse(source).body
    return bool(body) and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "glue"
        or isinstance(node, ast.For | ast.If) and _only_glue(ast.unparse(node.body))
        for node in body
    )


@pytest.mark.parametrize("name", book.chapters())
def test_presentation_cells_are_folded_and_the_parameters_are_not(name):
    for cell in _code_cells(name):
        tags = set(cell.metadata.get("tags", []))
        if "parameters" in tags:
            assert "hide-input" not in tags, f"{name}: the parameters cell must stay visible"
            continue
        draws = any(call in cell.source for call in PRESENTATION_CALLS)
        if draws or _only_glue(cell.source):
            assert "hide-input" in tags, f"{name}: a cell that only presents results is not folded:\n{cell.source[:200]}"


@pytest.mark.parametrize("name", book.chapters())
def test_every_drawn_figure_is_glued_under_a_caption(name):
    text = (book.BOOK / f"{name}.md").read_text()
    for cell in _code_cells(name):
        if "report.figure(" in cell.source or "sns.relplot(" in cell.source or "sns.catplot(" in cell.source:
            assert "report.glue_figure(" in cell.source, f"{name}: a figure that is not glued:\n{cell.source[:200]}"
    import re

    glued = re.findall(r'report\.glue_figure\("([^"]+)"', text)
    placed = re.findall(r"```\{glue:figure\} (\S+)\n:name: (\S+)\n:alt: (.+)\n\n(.+)", text)
    assert sorted(glued) == sorted(key for key, *_ in placed), f"{name}: glued and placed figures differ"
    for key, anchor, alt, caption in placed:
        assert anchor == key, f"{name}: figure {key} is named {anchor}"
        assert len(alt) > 20 and len(caption) > 20, f"{name}: figure {key} lacks alt text or a caption"


@pytest.mark.parametrize("name", book.chapters())
def test_visible_code_lines_fit_the_page(name):
    """ruff cannot split a long string or comment: such lines are split by hand (the HTML check sees the page)."""
    for cell in _code_cells(name):
        if "hide-input" in cell.metadata.get("tags", []):
            continue
        long = [line for line in cell.source.splitlines() if len(line) > book.CODE_WIDTH]
        assert not long, f"{name}: visible code lines wider than {book.CODE_WIDTH} characters: {long}"


def test_chapters_are_formatted_to_the_page():
    unformatted = book.format_chapters(check=True)
    assert not unformatted, f"run `python -m simflib.book format`: {unformatted}"


def test_format_cell_wraps_to_the_page_width():
    long = "result = some_function(first_argument, second_argument, third_argument, fourth_argument, fifth)"
    formatted = book.format_cell(long)
    assert formatted != long and all(len(line) <= book.CODE_WIDTH for line in formatted.splitlines())
    assert book.format_cell(formatted) == formatted
    with pytest.raises(ValueError, match="cannot format"):
        book.format_cell("def broken(:\n    pass")
