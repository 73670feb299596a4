"""Sphinx extension: point the book's Binder and Colab buttons at the chapters' notebooks.

Chapters are MyST markdown files, which Colab cannot open and Jupyter opens as text. ``python -m simflib.book
notebooks`` writes each chapter as an ``.ipynb`` (no outputs, plus a setup cell for a bare machine), and
``make notebooks-branch`` commits them to the ``notebooks`` branch (see :data:`simflib.book.NOTEBOOK_BRANCH`),
which the build names as the repository's branch. sphinx-book-theme links the launch buttons to ``<page>.md``
because no ``.ipynb`` sits beside the sources; this extension, run after it, links them to ``<page>.ipynb``.
"""

from __future__ import annotations

from typing import Any


def notebook_url(url: str, pagename: str) -> str:
    """A launch URL with the chapter's ``.md`` source replaced by its ``.ipynb`` notebook."""
    for suffix in (".md", ".md.txt"):
        tail = f"{pagename}{suffix}"
        if tail in url:
            return url.replace(tail, f"{pagename}.ipynb")
    return url


def _relink(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    del app, templatename, doctree
    for group in context.get("header_buttons", []):
        if isinstance(group, dict) and group.get("label") == "launch-buttons":
            for button in group.get("buttons", []):
                if "url" in button:
                    button["url"] = notebook_url(button["url"], pagename)


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _relink, priority=502)  # after sphinx-book-theme's launch buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
