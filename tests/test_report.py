"""The book's number and table format and its figure checks (simflib.report)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simflib import report


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (0.550301, {}, "0.550"),
        (0.0854, {}, "0.0854"),
        (12345.6, {}, "12346"),
        (2.5, {}, "2.50"),
        (0.9996, {}, "1.00"),
        (-0.001234, {}, "-0.00123"),
        (1.23456e-6, {}, "1.23e-06"),
        (3.2e7, {}, "3.20e+07"),
        (0.0, {}, "0"),
        (np.int64(32), {}, "32"),
        (7, {"signed": True}, "+7"),
        (0.1234, {"percent": True, "signed": True}, "+12.3%"),
        (-0.5, {"percent": True, "signed": True}, "-50.0%"),
        (float("nan"), {}, report.DASH),
        (None, {}, report.DASH),
        (pd.NA, {}, report.DASH),
        (float("inf"), {}, "\u221e"),
    ],
)
def test_number(value, kwargs, expected):
    assert report.number(value, **kwargs) == expected


def test_number_keeps_the_significant_digits_pythons_g_format_keeps():
    rng = np.random.default_rng(0)
    for x in 10.0 ** rng.uniform(-4, 5.9, size=500) * rng.choice([-1, 1], size=500):
        shown = report.number(x)
        # Below 1000 Python's .3g rounding; above, the integer part is kept whole.
        expected = float(f"{x:.3g}") if abs(x) < 999.5 else float(round(x))
        assert float(shown) == pytest.approx(expected, rel=1e-12), (x, shown)
        digits = shown.lstrip("-").replace(".", "").lstrip("0")
        assert len(digits) >= 3, (x, shown)


@pytest.mark.parametrize("seed", range(20))
def test_index_ranges_read_back_to_the_same_integers(seed):
    rng = np.random.default_rng(seed)
    values = sorted(rng.choice(40, size=rng.integers(0, 40), replace=False).tolist())
    text = report.index_ranges(rng.permutation(values).tolist())
    expanded, bounds = [], []  # parse the text back (the independent expectation: the set we started from)
    for part in filter(None, text.split(", ")):
        first, _, last = part.partition("\u2013")
        bounds.append((int(first), int(last or first)))
        assert not last or int(last) > int(first)  # a written range spans two values at least
        expanded += range(bounds[-1][0], bounds[-1][1] + 1)
    assert expanded == values
    assert all(b[0] > a[1] + 1 for a, b in zip(bounds, bounds[1:]))  # maximal ranges: no two could merge
    assert report.index_ranges([0, 1, 2, 5, 7, 8]) == "0\u20132, 5, 7\u20138"
    with pytest.raises(ValueError, match="repeated"):
        report.index_ranges([1, 1])


def test_mean_sd_is_one_unbreakable_cell():
    text = report.mean_sd(0.08541, 0.01123)
    assert text == "0.0854\u00a0\u00b1\u00a00.0112"
    assert " " not in text
    assert report.mean_sd(float("nan"), 0.1) == report.DASH
    assert report.mean_sd(0.5, float("nan")) == "0.500"


def test_best_mask_marks_ties_and_never_undefined_values():
    assert report.best_mask([3.0, 1.0, 1.0, float("nan")], "min") == [False, True, True, False]
    assert report.best_mask([3.0, 1.0, float("nan")], "max") == [True, False, False]
    assert report.best_mask([float("nan")] * 2, "min") == [False, False]
    with pytest.raises(ValueError, match="goal"):
        report.best_mask([1.0], "lowest")  # type: ignore[arg-type]


def _summary() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    index = pd.MultiIndex.from_product([["boolq", "piqa"], ["blind", "Linear", "TracIn*"]], names=["setting", "simulator"])
    return pd.DataFrame(
        {
            "all_steps_mse_mean": rng.uniform(0.01, 0.1, 6),
            "all_steps_mse_std": rng.uniform(0.001, 0.01, 6),
            "all_steps_mse": ["text"] * 6,  # summarize's own formatted column is replaced by the pair
            "final_step_lds": [np.nan, *rng.uniform(0, 1, 5)],
            "mse_improvement": rng.uniform(-0.5, 0.5, 6),
        },
        index=index,
    )


def test_format_table_marks_the_best_per_setting_from_the_numbers():
    frame = _summary()
    styler = report.format_table(
        frame, ["all_steps_mse", "final_step_lds", "mse_improvement"],
        best={"all_steps_mse": "min", "final_step_lds": "max"}, by="setting", exclude=["TracIn*"],
        percent=["mse_improvement"], signed=["mse_improvement"],
    )
    shown = styler.data
    assert list(shown.columns) == ["MSE (all steps)", "LDS (final step)", "vs blind"]
    styles = styler._compute().ctx  # (row, column) -> [(property, value)]
    bold = {(r, c) for (r, c), props in styles.items() if ("font-weight", "bold") in props}
    expected = set()
    for col, (name, goal) in enumerate((("all_steps_mse_mean", "min"), ("final_step_lds", "max"))):
        eligible = frame[frame.index.get_level_values("simulator") != "TracIn*"][name].dropna()
        for setting, values in eligible.groupby(level="setting"):
            winner = values.idxmin() if goal == "min" else values.idxmax()
            expected.add((frame.index.get_loc(winner), col))
    assert bold == expected
    mean, sd = frame.iloc[0][["all_steps_mse_mean", "all_steps_mse_std"]]
    left, right = shown.iloc[0, 0].split("\u00a0\u00b1\u00a0")
    assert (float(left), float(right)) == (float(f"{mean:.3g}"), float(f"{sd:.3g}"))
    assert shown.iloc[0, 1] == report.DASH
    assert all(v.startswith(("+", "-")) and v.endswith("%") for v in shown["vs blind"])
    assert "white-space: nowrap" in styler.to_html()  # the number columns


def test_format_table_groups_by_several_levels():
    rng = np.random.default_rng(3)
    index = pd.MultiIndex.from_product(
        [["nq", "xsum"], ["loss", "f1"], ["blind", "linear", "gptfluence"]], names=["setting", "metric", "simulator"]
    )
    frame = pd.DataFrame({"all_steps_mse": rng.uniform(0, 1, len(index))}, index=index)
    styler = report.format_table(frame, best={"all_steps_mse": "min"}, by=("setting", "metric"))
    bold = {r for (r, _), props in styler._compute().ctx.items() if ("font-weight", "bold") in props}
    winners = frame["all_steps_mse"].groupby(level=["setting", "metric"]).idxmin()
    assert bold == {frame.index.get_loc(w) for w in winners}
    assert len(bold) == 4  # one per (setting, metric), not one per setting
    with pytest.raises(KeyError, match="by='task'"):
        report.format_table(frame, best={"all_steps_mse": "min"}, by=("setting", "task"))


def test_format_table_merges_mean_and_sd_by_default_and_rejects_unknown_columns():
    frame = _summary()
    assert list(report.format_table(frame).data.columns) == ["MSE (all steps)", "LDS (final step)", "vs blind"]
    with pytest.raises(KeyError, match="spearman"):
        report.format_table(frame, ["spearman"])
    with pytest.raises(KeyError, match="not shown"):
        report.format_table(frame, ["final_step_lds"], best={"all_steps_mse": "min"})
    with pytest.raises(KeyError, match="by="):
        report.format_table(frame, best={"final_step_lds": "max"}, by="task")


def test_facet_size_gives_the_book_width():
    size = report.facet_size(3)
    assert 3 * size["height"] * size["aspect"] == pytest.approx(report.WIDTH)


def test_unlabelled_numeric_axes_are_found_and_categorical_ones_pass():
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, axes = report.figure(1, 2)
    axes[0].plot([0, 1], [2, 3])
    axes[1].plot([0, 1], [2, 3])
    axes[0].set_xlabel("step")
    assert report.unlabelled_axes(fig) == ["panel 1: y", "panel 2: x"]  # panel 2's y is not the left column
    axes[0].set_ylabel("loss (nats)")
    axes[1].set_xlabel("step")
    assert report.unlabelled_axes(fig) == []
    plt.close(fig)
    fig, ax = report.figure()
    ax.barh(["Linear", "blind"], [0.1, 0.2])
    assert report.unlabelled_axes(fig) == ["panel 1: x"]  # y is categorical: its tick labels name it
    plt.close(fig)
    assert math.isclose(fig.get_size_inches()[0], report.WIDTH)


def test_glue_figure_refuses_unlabelled_axes():
    pytest.importorskip("myst_nb")
    fig, ax = report.figure()
    ax.plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="'fig-x'.*panel 1: x, panel 1: y"):
        report.glue_figure("fig-x", fig)


def test_format_summary_never_marks_ground_truth_rows_and_shows_percentages():
    summary = pd.DataFrame(
        {
            "all_steps_mse_mean": [0.3, 0.2, 0.1],
            "all_steps_mse_std": [0.01, 0.01, 0.01],
            "final_step_lds": [np.nan, 0.4, 0.9],
            "mse_improvement": [0.0, 0.33, 0.66],
            "runs": [10, 10, 10],
        },
        index=pd.Index(["blind", "Linear", "TracIn, σ-rescaled*"], name="simulator"),
    )
    styler = report.format_summary(summary)
    assert list(styler.data.columns) == ["MSE (all steps)", "LDS (final step)", "vs blind"]
    bold = {(r, c) for (r, c), props in styler._compute().ctx.items() if ("font-weight", "bold") in props}
    assert bold == {(1, 0), (1, 1), (1, 2)}  # the starred row is better on all three, but uses the ground truth
    assert list(styler.data["vs blind"]) == ["0%", "+33.0%", "+66.0%"]


def test_format_table_refuses_a_non_unique_index():
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=["a", "a"])
    with pytest.raises(ValueError, match="unique"):
        report.format_table(frame)
