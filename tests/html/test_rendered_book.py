"""The built book as a reader sees it: every chapter opens in headless Chromium without errors, broken images or
empty tables; visible code fits its box, table numbers do not wrap at 1300 px, no stray reprs, every figure has a
numbered caption and alt text. Runs after a build (``make book`` or ``make book-smoke``); skipped when there is none.

Screenshots land in ``_build/screenshots/<chapter>.png`` (CI keeps them as an artifact).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import json
from functools import cache

import pytest

from simflib import book

HTML = Path(os.environ.get("SIMFLIB_HTML", book.ROOT / "_build" / "html"))
SHOTS = book.ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WINDOW = (1300, 2400)  # the reader's window, px
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--virtual-time-budget=8000"]  # let MathJax typeset before the capture
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


def _glued(name: str) -> dict:
    """The values a chapter's executed notebook glued, by key (text/plain)."""
    executed = book.EXECUTED / f"{name}.ipynb"
    if not executed.is_file():
        pytest.skip(f"{name} was not executed in this build")
    return book.glued_values(executed)


@pytest.mark.parametrize("name", [*book.chapters(), "intro"])
def test_rendered_numbers_are_the_glued_values(name):
    """Every ``{glue:text}`` role of a page's prose shows, in order, the value its executed notebook (or, for
    ``other.ipynb::key``, the other chapter's) recorded, formatted as the role asks: no number on the page is
    typed, lost or stale."""
    jupytext = pytest.importorskip("jupytext")
    from myst_nb.core.variables import format_plain_text

    source = jupytext.read(book.BOOK / f"{name}.md")
    # Smart quotes make typed quotes and dashes typographic on the page: both sides are compared typed.
    plain = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2013": "--", "\u2014": "---"})
    expected = []
    for cell in source.cells:
        if cell.cell_type != "markdown":
            continue
        for role in GLUE_TEXT.findall(cell.source):
            doc, _, rest = role.rpartition("::")
            page = doc.removesuffix(".ipynb") if doc else name
            key, _, spec = rest.partition(":")
            recorded = _glued(page)
            assert key in recorded, f"{name}: the prose pastes {key!r}, which {page} never glued"
            expected.append(format_plain_text(recorded[key], spec or "s").translate(plain))
    shown = [span.get_text().translate(plain) for span in _soup(name).select("span.pasted-text")]
    assert shown == expected, f"{name}: the page shows other values than the notebooks glued"


@pytest.mark.parametrize("name", book.chapters())
def test_chapters_that_plot_show_their_figures(name):
    source = (book.BOOK / f"{name}.md").read_text()
    plotted = len(re.findall(r"report\.glue_figure\(", source))
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
    flags = [*CHROME_FLAGS, f"--user-data-dir={SHOTS / '.profile'}"]
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", (HTML / f"{name}.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"{name}: Chromium produced no screenshot"


def _visible_code_cells(soup):
    """The input boxes of code cells a reader sees without opening a fold."""
    return [cell.select_one("div.cell_input pre") for cell in soup.select("div.cell")
            if not {"tag_hide-input", "tag_remove-input"} & set(cell.get("class", []))
            and cell.select_one("div.cell_input pre") is not None]


@pytest.mark.parametrize("name", book.chapters())
def test_visible_code_lines_fit_the_page(name):
    long = [line for pre in _visible_code_cells(_soup(name)) for line in pre.get_text().splitlines()
            if len(line) > book.CODE_WIDTH]
    assert not long, f"{name}: {len(long)} visible code lines wider than {book.CODE_WIDTH} characters: {long[:3]}"


# Outputs that are the repr of a plotting object (a cell that forgot to end with a statement), not a result.
REPR = re.compile(r"^\s*\[?<?(Text|matplotlib\.|<matplotlib|Axes|AxesSubplot|Figure size|seaborn\.|"
                  r"Line2D|<Axes|<Figure|PathCollection|Legend)\b")


@pytest.mark.parametrize("name", book.chapters())
def test_no_warning_is_shown(name):
    """A warning on the page is either a problem to fix or an expected one to filter, with a comment, in the
    cell: never something a reader has to judge."""
    for node in _soup(name).select(".output.stderr"):
        assert not re.search(r"Warning\b", node.get_text()), f"{name}: a warning is shown: {node.get_text()[:300]!r}"


@pytest.mark.parametrize("name", book.chapters())
def test_no_stray_repr_output(name):
    for node in _soup(name).select("div.cell_output .output.text_plain, div.cell_output div.highlight pre"):
        text = node.get_text()
        assert not REPR.match(text), f"{name}: a plotting object's repr is shown: {text[:120]!r}"


@pytest.mark.parametrize("name", book.chapters())
def test_every_figure_has_a_numbered_caption_and_alt_text(name):
    for img in _soup(name).find_all("img"):
        if "_images" not in img.get("src", ""):
            continue
        figure = img.find_parent("figure")
        assert figure is not None, f"{name}: {img['src']} is a bare cell output, not a figure with a caption"
        caption = figure.find("figcaption")
        assert caption is not None and caption.select_one(".caption-number"), f"{name}: {img['src']}: no numbered caption"
        assert len(caption.get_text(strip=True)) > 20, f"{name}: {img['src']}: the caption says nothing"
        assert len(img.get("alt", "").strip()) > 10, f"{name}: {img['src']} has no alt text"


LAYOUT_JS = Path(__file__).with_name("layout.js")


@cache
def _layout(name: str) -> dict:
    """What Chromium lays out at the reader's width: table cells whose numbers wrap, visible code boxes that
    overflow (their widest line)."""
    probe = HTML / f"_layout_{name}.html"
    page = (HTML / f"{name}.html").read_text(encoding="utf-8")
    probe.write_text(page.replace("</body>", f"<script>{LAYOUT_JS.read_text()}</script></body>"), encoding="utf-8")
    try:
        dom = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={SHOTS / '.profile'}", "--dump-dom",
                              probe.as_uri()], check=True, capture_output=True, timeout=120, text=True).stdout
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="simflib-layout"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{name}: the layout probe did not run"
    import html

    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("name", PAGES)
def test_table_numbers_do_not_wrap(name):
    """Numbers in result tables (a number, a percentage, mean ± sd) stay on one line; prose tables may wrap."""
    layout = _layout(name)
    assert layout["width"] == WINDOW[0]
    assert not layout["wrapped"], f"{name}: table cells wrap at {WINDOW[0]} px: {layout['wrapped'][:5]}"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("name", book.chapters())
def test_result_tables_fit_the_page(name):
    wide = _layout(name)["wide"]
    assert not wide, f"{name}: result tables wider than the page at {WINDOW[0]} px (headers: {wide[:3]})"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize("name", book.chapters())
def test_visible_code_is_not_cut_off(name):
    cut = _layout(name)["overflow"]
    assert not cut, f"{name}: visible code boxes overflow at {WINDOW[0]} px, e.g. {cut[:3]}"
