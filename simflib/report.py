"""How the book shows results: one number format, one table formatter and one figure style for every chapter.

Tables: :func:`format_table` turns a frame of numbers (for instance :func:`simflib.metrics.summarize`'s) into a styled table
with a fixed number of significant digits (:func:`number`), mean ± sd in one cell that does not wrap
(:func:`mean_sd`), "–" for undefined values, readable headers (:data:`HEADERS`) and the best value of each column
marked in bold, chosen from the numbers (within each setting when rows belong to several).

Figures: :func:`set_style` sets one size and a colour-blind-safe palette (Okabe & Ito's, :data:`PALETTE`);
:func:`figure` makes a figure of that size; :func:`glue_figure` checks that its axes are labelled and glues it, so
that the chapter's prose shows it with a numbered caption and alt text (a ``{glue:figure}`` directive).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from pandas.io.formats.style import Styler

__all__ = [
    "DASH",
    "DIGITS",
    "HEADERS",
    "PALETTE",
    "ROW_HEIGHT",
    "SUMMARY_GOALS",
    "WIDTH",
    "best_mask",
    "facet_size",
    "figure",
    "format_summary",
    "format_table",
    "glue_figure",
    "mean_sd",
    "number",
    "set_style",
    "unlabelled_axes",
]

DIGITS = 3
"""Significant digits of every number in a table."""
DASH = "\u2013"
"""Shown for an undefined value (NaN, None)."""
_NBSP = "\u00a0"

HEADERS: dict[str, str] = {
    "all_steps_mse": "MSE (all steps)",
    "final_step_mse": "MSE (final step)",
    "final_step_spearman": "Spearman (final step)",
    "final_step_lds": "LDS (final step)",
    "all_steps_lds": "LDS (all steps)",
    "mse_shared": "MSE, shared part",
    "mse_specific": "MSE, curriculum-specific part",
    "mse_improvement": "vs blind",
    "runs": "runs",
}
"""Readable headers of :func:`simflib.metrics.summarize`'s column names (any other name is shown as it is)."""

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
"""The Okabe–Ito palette, safe for colour-blind readers (blue, orange, bluish green, vermillion, reddish purple, sky
blue, yellow, black)."""
WIDTH = 8.0
"""Width of every figure, inches."""
ROW_HEIGHT = 3.2
"""Height of one row of panels, inches."""

Goal = Literal["min", "max"]


def number(x: Any, *, digits: int = DIGITS, signed: bool = False, percent: bool = False) -> str:
    """A number with ``digits`` significant digits, in fixed notation between 1e-4 and 1e6 and scientific outside.

    The integer part is never cut (12345.6 shows as "12346"); integers show whole. Undefined values (``None``,
    NaN) show as :data:`DASH`.

    Args:
        x: The value.
        digits: Significant digits.
        signed: Prefix positive values with "+".
        percent: Show ``100 x`` followed by "%".

    Returns:
        The text.
    """
    if digits < 1:
        raise ValueError(f"digits must be positive, got {digits}")
    if x is None or type(x).__name__ == "NAType":  # None, pandas.NA
        return DASH
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return str(x)
    sign = "+" if signed and x > 0 else ""
    if _is_integral(x) and not percent:
        return f"{sign}{int(x)}"
    value = float(x)
    if math.isnan(value):
        return DASH
    if percent:
        value *= 100.0
    suffix = "%" if percent else ""
    if math.isinf(value):
        return f"{sign}{'-' if value < 0 else ''}\u221e{suffix}"
    if value == 0.0:
        return f"0{suffix}"
    exponent = math.floor(math.log10(abs(value)))
    if exponent < -4 or exponent >= 6:
        return f"{sign}{value:.{digits - 1}e}{suffix}"
    decimals = max(digits - 1 - exponent, 0)
    rounded = round(value, decimals)
    if rounded != 0.0 and math.floor(math.log10(abs(rounded))) > exponent:  # 0.9996 -> 1.000: one digit fewer
        decimals = max(decimals - 1, 0)
    return f"{sign}{value:.{decimals}f}{suffix}"


def _is_integral(x: Any) -> bool:
    import numpy as np

    return isinstance(x, int | np.integer)


def mean_sd(mean: Any, sd: Any, *, digits: int = DIGITS) -> str:
    """ "mean ± sd" joined by non-breaking spaces, so that a table cell never wraps inside it.

    Args:
        mean: The mean.
        sd: Its standard deviation (undefined: the mean alone).
        digits: Significant digits of each.

    Returns:
        The text; :data:`DASH` when the mean is undefined.
    """
    shown = number(mean, digits=digits)
    if shown == DASH or number(sd) == DASH:
        return shown
    return f"{shown}{_NBSP}\u00b1{_NBSP}{number(sd, digits=digits)}"


def index_ranges(indices: Iterable[int]) -> str:
    """Integers written as runs of consecutive values: ``[0, 1, 2, 5, 7, 8]`` reads "0\u20132, 5, 7\u20138".

    Args:
        indices: Distinct integers, in any order.

    Returns:
        The text, ranges joined by ", "; empty for no integers.
    """
    values = sorted(int(i) for i in indices)
    if len(set(values)) != len(values):
        raise ValueError(f"index_ranges: repeated values in {values}")
    parts: list[str] = []
    start = 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[k - 1] + 1:
            first, last = values[start], values[k - 1]
            parts.append(str(first) if first == last else f"{first}\u2013{last}")
            start = k
    return ", ".join(parts)


def best_mask(values: Sequence[float] | pd.Series, goal: Goal) -> list[bool]:
    """Which values are the best (ties all marked; undefined values never).

    Args:
        values: The values of one column (within one group).
        goal: ``"min"`` or ``"max"``.

    Returns:
        One flag per value.
    """
    if goal not in ("min", "max"):
        raise ValueError(f"goal must be 'min' or 'max', got {goal!r}")
    numbers = [float("nan") if v is None else float(v) for v in values]
    defined = [v for v in numbers if not math.isnan(v)]
    if not defined:
        return [False] * len(numbers)
    target = min(defined) if goal == "min" else max(defined)
    return [not math.isnan(v) and v == target for v in numbers]


def format_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    best: Mapping[str, Goal] | None = None,
    by: str | Sequence[str] | None = None,
    exclude: Iterable[Any] = (),
    percent: Iterable[str] = (),
    signed: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    digits: int = DIGITS,
) -> Styler:
    """A frame of numbers as the book's table.

    A column ``x`` is shown as "mean ± sd" when the frame has ``x_mean`` and ``x_std`` (as
    :func:`simflib.metrics.summarize` returns), else as the number ``x``; text columns are shown as they are.

    Args:
        frame: One row per row of the table (its index labels the rows).
        columns: The columns to show, in order (default: every column, ``x_mean``/``x_std`` pairs merged).
        best: ``{column: "min" | "max"}``: the best value of each such column is shown in bold, compared by the
            mean for a mean ± sd column.
        by: An index level (or column), or several, naming the groups within which the best is chosen, e.g.
            ``"setting"`` or ``("setting", "metric")``.
        exclude: Row labels never marked best (e.g. rows that use the ground truth).
        percent: Columns shown as percentages.
        signed: Columns shown with a sign.
        headers: Headers for the shown columns (default :data:`HEADERS`, else the column's name).
        digits: Significant digits.

    Returns:
        A pandas ``Styler`` (rendered as HTML by the book).
    """
    import pandas as pd

    if not (frame.index.is_unique and frame.columns.is_unique):
        raise ValueError("format_table: the frame's index and columns must be unique (a table row per label)")
    best = dict(best or {})
    percent, signed, excluded = set(percent), set(signed), set(exclude)
    if columns is None:
        columns = []
        for name in frame.columns:
            base = str(name).removesuffix("_mean").removesuffix("_std")
            if not {f"{base}_mean", f"{base}_std"} <= set(frame.columns):
                base = str(name)
            if base not in columns:
                columns.append(base)
    values: dict[str, pd.Series] = {}
    shown: dict[str, list[str]] = {}
    for name in columns:
        if f"{name}_mean" in frame.columns and f"{name}_std" in frame.columns:
            mean, sd = frame[f"{name}_mean"], frame[f"{name}_std"]
            values[name] = mean
            shown[name] = [mean_sd(m, s, digits=digits) for m, s in zip(mean, sd)]
        elif name in frame.columns:
            column = frame[name]
            values[name] = column
            shown[name] = [
                number(v, digits=digits, percent=name in percent, signed=name in signed) for v in column.tolist()
            ]
        else:
            raise KeyError(
                f"format_table: no column {name!r} (nor {name}_mean and {name}_std) in {list(frame.columns)}"
            )
    unknown = set(best) - set(columns)
    if unknown:
        raise KeyError(f"format_table: best names columns that are not shown: {sorted(unknown)}")
    keys: list[list[Any]] = []
    for level in [] if by is None else [by] if isinstance(by, str) else list(by):
        if level in (frame.index.names or []):
            keys.append(list(frame.index.get_level_values(level)))
        elif level in frame.columns:
            keys.append(list(frame[level]))
        else:
            raise KeyError(f"format_table: by={level!r} is neither an index level nor a column")
    groups = list(zip(*keys)) if keys else [()] * len(frame)
    bold: dict[str, list[bool]] = {}
    for name, goal in best.items():
        flags = [False] * len(frame)
        numeric = pd.to_numeric(values[name], errors="coerce").tolist()
        for group in dict.fromkeys(groups):
            rows = [k for k, g in enumerate(groups) if g == group and not _excluded(frame.index[k], excluded)]
            for k, flag in zip(rows, best_mask([numeric[k] for k in rows], goal)):
                flags[k] = flag
        bold[name] = flags
    names = {**HEADERS, **(headers or {})}
    table = pd.DataFrame({names.get(c, c): shown[c] for c in columns}, index=frame.index)
    weights = pd.DataFrame(
        {
            names.get(c, c): ["font-weight: bold" if f else "" for f in bold.get(c, [False] * len(frame))]
            for c in columns
        },
        index=frame.index,
    )
    numeric = [names.get(c, c) for c in columns if _numeric_column(values[c])]
    styler = table.style.apply(lambda _: weights, axis=None)
    return styler.set_properties(subset=numeric, **{"white-space": "nowrap", "text-align": "right"})


def _numeric_column(column: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column)) and not pd.api.types.is_bool_dtype(column)


SUMMARY_GOALS: dict[str, Goal] = {
    "all_steps_mse": "min",
    "final_step_spearman": "max",
    "final_step_lds": "max",
    "mse_improvement": "max",
}
"""The columns of :func:`simflib.metrics.summarize` a results table shows, and which way is better."""


def format_summary(
    summary: pd.DataFrame,
    extra: Sequence[str] = (),
    *,
    by: str | Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    best: Mapping[str, Goal] | None = None,
    digits: int = DIGITS,
) -> Styler:
    """:func:`format_table` of a :func:`simflib.metrics.summarize` frame: the columns of :data:`simflib.report.SUMMARY_GOALS` it has, then
    ``extra``, the best of each marked.

    Rows whose label ends with "*" (σ-rescaled rows, which use the ground truth) are never marked best; the
    improvement over the curriculum-blind baseline is shown as a signed percentage.

    Args:
        summary: Output of :func:`simflib.metrics.summarize` (possibly with more columns).
        extra: Further columns to show after the summary's.
        by: Groups within which the best is chosen (e.g. ``"setting"`` or ``("setting", "metric")``).
        headers: Headers of the extra columns.
        best: Goals of extra columns, ``{column: "min" | "max"}``.
        digits: Significant digits.

    Returns:
        The styled table.
    """
    columns = [c for c in SUMMARY_GOALS if c in summary.columns or f"{c}_mean" in summary.columns]
    goals = {c: SUMMARY_GOALS[c] for c in columns} | dict(best or {})
    labels = (
        summary.index.get_level_values("simulator") if "simulator" in (summary.index.names or []) else summary.index
    )
    starred = [label for label in labels if str(label).endswith("*")]
    return format_table(
        summary,
        [*columns, *extra],
        best=goals,
        by=by,
        exclude=starred,
        percent=["mse_improvement"],
        signed=["mse_improvement"],
        headers=headers,
        digits=digits,
    )


def _excluded(label: Any, excluded: set[Any]) -> bool:
    if label in excluded:
        return True
    return isinstance(label, tuple) and any(part in excluded for part in label)


def set_style() -> None:
    """The book's figure style: seaborn's white grid, :data:`PALETTE`, figures :data:`WIDTH` wide."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE)
    plt.rcParams["figure.figsize"] = (WIDTH, ROW_HEIGHT)
    plt.rcParams["figure.dpi"] = 100
    plt.rcParams["savefig.dpi"] = 100


def figure(nrows: int = 1, ncols: int = 1, *, height: float = ROW_HEIGHT, **subplots: Any) -> tuple[Figure, Any]:
    """A figure of the book's size: :data:`WIDTH` wide, ``height`` per row of panels.

    Args:
        nrows: Rows of panels.
        ncols: Columns of panels.
        height: Height of a row, inches.
        **subplots: Passed to ``matplotlib.pyplot.subplots`` (``sharey``, ``squeeze``, ...).

    Returns:
        ``(figure, axes)`` as ``plt.subplots`` returns them.
    """
    import matplotlib.pyplot as plt

    subplots.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(WIDTH, height * nrows), **subplots)


def facet_size(ncols: int, *, height: float = ROW_HEIGHT) -> dict[str, float]:
    """``height`` and ``aspect`` for a seaborn figure-level plot with ``ncols`` columns of facets, so that it is
    :data:`WIDTH` wide like every other figure."""
    if ncols < 1:
        raise ValueError(f"ncols must be positive, got {ncols}")
    return {"height": height, "aspect": WIDTH / ncols / height}


def _numeric_ticks(labels: Iterable[Any]) -> bool:
    texts = [t.get_text() for t in labels if t.get_text()]
    for text in texts:
        if text.startswith("$"):
            continue
        try:
            float(text.replace("\u2212", "-").replace("%", "").replace(",", ""))
        except ValueError:
            return False
    return True


def unlabelled_axes(fig: Figure) -> list[str]:
    """The axes of ``fig`` that show numbers without saying what they are.

    An axis with numeric tick labels needs a label on the outer panels (the bottom row for x, the left column for
    y), or a figure-level ``supxlabel``/``supylabel``; categorical axes (text ticks) and panels without data need
    none.

    Returns:
        One line per missing label, e.g. ``"panel 2: x"``.
    """
    fig.canvas.draw()
    missing = []
    sup_x = getattr(fig, "_supxlabel", None) is not None
    sup_y = getattr(fig, "_supylabel", None) is not None
    for k, ax in enumerate(fig.axes, start=1):
        if not ax.get_visible() or not (ax.lines or ax.collections or ax.patches or ax.images):
            continue
        if _is_colorbar(ax):
            continue
        spec = ax.get_subplotspec()
        last_row = spec is None or spec.is_last_row()
        first_col = spec is None or spec.is_first_col()
        for axis, outer, sup in (("x", last_row, sup_x), ("y", first_col, sup_y)):
            if outer and not sup and _unlabelled(ax, axis):
                missing.append(f"panel {k}: {axis}")
    return missing


def _unlabelled(ax: Axes, axis: str) -> bool:
    """Whether the axis shows numbers (and is visible) without a label."""
    along = ax.xaxis if axis == "x" else ax.yaxis
    return along.get_visible() and not along.get_label_text() and _numeric_ticks(along.get_ticklabels())


def _is_colorbar(ax: Axes) -> bool:
    return getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"


def glue_figure(name: str, fig: Figure) -> None:
    """Glue ``fig`` under ``name`` for a ``{glue:figure}`` directive (caption, alt text) and close it.

    Raises:
        ValueError: An axis shows numbers without a label (:func:`unlabelled_axes`).
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    missing = unlabelled_axes(fig)
    if missing:
        raise ValueError(f"figure {name!r}: axes without a label: {', '.join(missing)}")
    glue(name, fig, display=False)
    plt.close(fig)
