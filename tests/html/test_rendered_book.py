"""The built book as a reader sees it: every chapter opens in headless Chromium without errors, broken images or
empty tables. Runs after a build (``make book`` or ``make book-smoke``); skipped when there is none.

Screenshots land in ``_build/screenshots/<chapter>.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from simflib import book

HTML = Path(os.environ.get("SIMFLIB_HTML", book.ROOT / "_build" / "html"))
SHOTS = book.ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PAGES = [name for name in book.chapters()] + ["intro", "glossary", "api"]

pytestmark = pytest.mark.skipif(not (HTML / "intro.html").is_file(), reason="no built book (run make book first)")


def _soup(name: str):
    bs4 = pytest.importorskip("bs4")
    path = HTML / f"{name}.html"
    assert path.is_file(), f"{name}.html was not built"
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@pytest.mark.parametrize("name", PAGES)
def test_no_error_output(name):
    soup = _soup(name)
    for node in soup.select(".output.traceback, .output.error, .cell_output .traceback"):
        pytest.fail(f"{name}: error output in the rendered page: {node.get_text()[:300]!r}")
    text = soup.get_text()
    for marker in ("Traceback (most recent call last)", "PapermillExecutionError"):
        assert marker not in text, f"{name}: {marker!r} in the rendered page"
    for node in soup.select(".output.stderr"):
        assert not re.search(r"\b(Error|Exception)\b", node.get_text()), f"{name}: stderr shows an error: {node.get_text()[:200]!r}"


@pytest.mark.parametrize("name", PAGES)
def test_images_exist_and_are_images(name):
    soup = _soup(name)
    for img in soup.find_all("img"):
        src = img.get("src", "")
        if src.startswith(("http:", "https:", "data:")):
            continue
        target = (HTML / src).resolve()
        assert target.is_file(), f"{name}: broken image {src}"
        head = target.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") or head[:2] == b"\xff\xd8" or target.suffix == ".svg", f"{name}: {src} is not an image"
        assert target.stat().st_size > 1000, f"{name}: {src} is suspiciously small"


@pytest.mark.parametrize("name", PAGES)
def test_figures_decode_and_are_not_blank(name):
    image = pytest.importorskip("matplotlib.image")
    for img in _soup(name).find_all("img"):
        src = img.get("src", "")
        if "_images" not in src or not src.endswith(".png"):
            continue
        pixels = image.imread(HTML / src)  # decodes the whole file: a truncated PNG fails here
        assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 50, f"{name}: {src} has shape {pixels.shape}"
        assert float(pixels[..., :3].std()) > 0.01, f"{name}: {src} is blank (one colour)"


GLUE_TEXT = re.compile(r"\{glue:text\}`([^`]+)`")


@pytest.mark.parametrize("name", book.chapters())
def test_rendered_numbers_are_the_glued_values(name):
    """Every ``{glue:text}`` role of a chapter's prose shows, in order, the value its executed notebook recorded,
    formatted as the role asks: no number on the page is typed, lost or stale."""
    jupytext = pytest.importorskip("jupytext")
    from myst_nb.core.variables import format_plain_text

    executed = book.EXECUTED / f"{name}.ipynb"
    if not executed.is_file():
        pytest.skip(f"{name} was not executed in this build")
    notebook = jupytext.read(executed)
    recorded = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            key = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if key is not None:
                recorded[key] = output["data"]["application/papermill.record/text/plain"]
    source = jupytext.read(book.BOOK / f"{name}.md")
    expected = []
    for cell in source.cells:
        if cell.cell_type != "markdown":
            continue
        for role in GLUE_TEXT.findall(cell.source):
            key, _, spec = role.partition(":")
            assert key in recorded, f"{name}: the prose pastes {key!r}, which the notebook never glued"
            expected.append(format_plain_text(recorded[key], spec or "s"))
    plain = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "--", "\u2014": "---"})
    shown = [span.get_text().translate(plain) for span in _soup(name).select("span.pasted-text")]
    assert shown == expected, f"{name}: the page shows other values than the notebook glued"


@pytest.mark.parametrize("name", book.chapters())
def test_chapters_that_plot_show_their_figures(name):
    source = (book.BOOK / f"{name}.md").read_text()
    plotted = len(re.findall(r"plt\.subplots\(|sns\.(?:relplot|catplot|displot|lmplot)\(", source))
    if plotted == 0:
        pytest.skip(f"{name} draws no figure")
    images = [img for img in _soup(name).find_all("img") if "_images" in img.get("src", "")]
    assert images, f"{name}: the chapter draws figures but the page shows none"


@pytest.mark.parametrize("name", PAGES)
def test_tables_are_not_empty(name):
    soup = _soup(name)
    for k, table in enumerate(soup.find_all("table")):
        cells = [c.get_text(strip=True) for c in table.find_all("td")]
        assert cells and any(cells), f"{name}: table {k} is empty"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("name", PAGES)
def test_chromium_renders_a_screenshot(name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={SHOTS / '.profile'}", "--hide-scrollbars", "--window-size=1280,2400",
             "--virtual-time-budget=8000"]  # let MathJax typeset before the capture
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", (HTML / f"{name}.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"{name}: Chromium produced no screenshot"
