"""What the book's tables do over and over: fit every registered simulator on a setting and score it on held-out runs.

Each function takes run sets and returns tidy frames (one row per simulator and held-out run, as
:func:`simflib.metrics.evaluate` makes them), so a simulator added to :data:`simflib.simulators.SIMULATORS` appears in every
table built on them without editing a chapter.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simflib.metrics import evaluate
from simflib.runs import RunSet
from simflib.simulators import SIMULATORS, OnMetric, Simulator
from simflib.tasks import STAND_IN

__all__ = [
    "PAPER_METHODS",
    "PAPER_TASKS",
    "build",
    "fit_registered",
    "learning_curve",
    "published_rows",
    "score_registered",
    "score_unseen_tests",
    "score_unseen_training",
    "split_tests",
]


PAPER_TASKS = {
    stand_in: {"rte": "RTE", "copa": "COPA", "winogrande": "Winogrande"}[original]
    for original, stand_in in STAND_IN.items()
}
"""The paper's name of the task each embedded task stands in for (``simflib.tasks.STAND_IN``)."""
PAPER_METHODS = {"ia3": "IA3", "full": "FMT"}
"""The paper's names of our tuning methods; LoRA has no counterpart in the paper."""


def published_rows(published: pd.DataFrame, config: dict[str, Any], simulator: str) -> pd.DataFrame:
    """The rows of the paper's Table 2 that a recorded setting stands in for, for one simulator.

    The task is the stand-in's (:data:`PAPER_TASKS`) and the method the paper's name of ours (:data:`PAPER_METHODS`);
    for Winogrande, the paper's only many-shot task, every method (it reports full tuning of T5-LMA only).

    Args:
        published: The paper's table, with columns ``task``, ``method``, ``simulator`` (``book/data/published_table2.csv``).
        config: A setting's recorded configuration (``runs.meta["config"]``).
        simulator: The simulator's label.

    Returns:
        The matching rows (none for a setting without a counterpart, such as LoRA).
    """
    task, method = PAPER_TASKS.get(config["task"]), PAPER_METHODS.get(config["method"])
    match = (published.task == task) & (published.simulator == simulator)
    if task != "Winogrande":
        match &= published.method == method
    return published[match]


def _accepted(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The options ``fn`` names, or all of them when it takes ``**kwargs`` (and filters them itself)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def build(name: str, n_train: int, *, metric: str = "loss", space: str = "auto", **options: Any) -> Any:
    """A registered simulator by its short name, given the options its constructor takes (others are ignored).

    Args:
        name: A key of :data:`simflib.simulators.SIMULATORS`.
        n_train: Pool size.
        metric: What it simulates: ``"loss"``, or a per-example metric the runs record, in which case the simulator
            comes wrapped in :class:`simflib.simulators.OnMetric` (bounded ``space``: ``"clip"``, ``"logit"`` or
            ``"auto"``, chosen on the validation runs) and its ``fit`` passes on the options the simulator's own
            ``fit`` names.
        space: See ``metric``.
        **options: Keyword options; each is passed only to simulators whose constructor names it (``unseen`` reaches
            the Simfluence family and not the curriculum-blind baseline).
    """
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; registered: {', '.join(SIMULATORS)}")
    if metric != "loss":
        return OnMetric(functools.partial(build, name, n_train, **options), metric, space=space)
    cls = SIMULATORS[name]
    return cls(n_train, **_accepted(cls, options))


def fit_registered(
    fit: RunSet,
    val: RunSet | None,
    *,
    names: Iterable[str] | None = None,
    metric: str = "loss",
    space: str = "auto",
    **options: Any,
) -> dict[str, Simulator]:
    """Fit each registered simulator (or those named) on ``fit``, choosing its hyperparameters on ``val``.

    Args:
        fit: Fit runs.
        val: Validation runs.
        names: Registry names, in table order (default: all, in registry order).
        metric: What is simulated: ``"loss"``, or a per-example metric the runs record (:meth:`simflib.RunSet.metric_names`),
            simulated by :class:`simflib.simulators.OnMetric` in the bounded ``space`` (``"clip"``, ``"logit"``, or
            ``"auto"``: chosen per simulator on ``val``).
        space: See ``metric``.
        **options: Passed to each simulator's constructor or ``fit`` where they name it (e.g. ``unseen="mean"``,
            ``l2_grid=[...]``).

    Returns:
        ``{label: fitted simulator}`` in the order of ``names``; each simulates ``metric``.
    """
    fitted: dict[str, Simulator] = {}
    for name in names if names is not None else SIMULATORS:
        sim = build(name, fit.n_train, metric=metric, space=space, **options)
        sim.fit(fit, val=val, **_accepted(sim.fit, options))
        fitted[sim.label] = sim
    return fitted


def score_registered(
    fit: RunSet,
    val: RunSet | None,
    held_out: RunSet,
    *,
    names: Iterable[str] | None = None,
    metric: str = "loss",
    **options: Any,
) -> tuple[pd.DataFrame, dict[str, Simulator]]:
    """Fit every registered simulator (or those named) to ``metric`` and evaluate it on the held-out runs.

    Args:
        metric: ``"loss"`` or a recorded metric (see :func:`fit_registered`); the held-out runs are scored on it.

    Returns:
        The per-run frame of :func:`simflib.metrics.evaluate` for all of them, and the fitted simulators by label.
    """
    fitted = fit_registered(fit, val, names=names, metric=metric, **options)
    truth = held_out.on_metric(metric)
    frame = pd.concat([evaluate(sim, truth, name=label) for label, sim in fitted.items()], ignore_index=True)
    return frame, fitted


def learning_curve(
    runs: RunSet,
    fit_sizes: Sequence[int],
    *,
    seed: int,
    n_val: int,
    n_test: int,
    names: Iterable[str] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Scores of each simulator against the number of fit runs, on one fixed set of held-out runs.

    The runs are permuted once (``seed``): the first ``n_test`` are held out, the next ``n_val`` choose
    hyperparameters, and the fits use the first ``k`` of the rest for each ``k`` in ``fit_sizes``, so a larger fit
    set contains every smaller one.

    Returns:
        The per-run frames of :func:`score_registered`, with a column ``n_fit``.
    """
    sizes = sorted({int(k) for k in fit_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"learning_curve: fit_sizes must be positive, got {list(fit_sizes)}")
    if sizes[-1] + n_val + n_test > len(runs):
        raise ValueError(
            f"learning_curve: {sizes[-1]} fit + {n_val} validation + {n_test} held-out runs need "
            f"{sizes[-1] + n_val + n_test}, the set has {len(runs)}"
        )
    order = np.random.default_rng(seed).permutation(len(runs))
    held_out, rest = runs[order[:n_test]], order[n_test + n_val :]
    val = runs[order[n_test : n_test + n_val]] if n_val else None
    frames = []
    for k in sizes:
        frame, _ = score_registered(runs[rest[:k]], val, held_out, names=names, **options)
        frames.append(frame.assign(n_fit=k))
    return pd.concat(frames, ignore_index=True)


class _OnTests:
    """A fitted simulator asked about named test examples (``simulate(..., test_ids=ids)``), for :func:`evaluate`."""

    def __init__(self, simulator: Any, test_ids: Sequence[Any]) -> None:
        self.simulator, self.test_ids = simulator, list(test_ids)
        self.label = type(simulator).label

    def simulate(self, curriculum: Any, initial_loss: Any) -> Any:
        return self.simulator.simulate(curriculum, initial_loss, test_ids=self.test_ids)


def _unseen_capable(names: Iterable[str] | None) -> list[str]:
    """The registry names (default all) whose simulators declare ``supports_unseen_tests``."""
    return [
        n
        for n in (names if names is not None else SIMULATORS)
        if getattr(SIMULATORS[n], "supports_unseen_tests", False)
    ]


def split_tests(test_ids: Sequence[Any], *, seed: int, unseen: float = 1 / 3) -> tuple[list[Any], list[Any]]:
    """Split test examples into those a simulator is fitted on and those it has never seen.

    Args:
        test_ids: The ids of a setting's test examples.
        seed: Seed of the permutation.
        unseen: Fraction held out (rounded; at least one on each side).

    Returns:
        (seen ids, unseen ids), each in the original order.
    """
    ids = list(test_ids)
    if len(ids) < 2 or not 0 < unseen < 1:
        raise ValueError(f"split_tests: need >= 2 test examples and 0 < unseen < 1, got {len(ids)} and {unseen}")
    k = min(max(int(round(unseen * len(ids))), 1), len(ids) - 1)
    held = set(np.random.default_rng(seed).permutation(len(ids))[:k].tolist())
    return [t for i, t in enumerate(ids) if i not in held], [t for i, t in enumerate(ids) if i in held]


def score_unseen_tests(
    fit: RunSet,
    val: RunSet | None,
    held_out: RunSet,
    *,
    seed: int,
    unseen: float = 1 / 3,
    names: Iterable[str] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Fit on some test examples, then simulate the others on held-out runs (the generalization protocol).

    Every registered simulator (or those named) that declares ``supports_unseen_tests`` is fitted on the fit and
    validation runs restricted to the seen test examples and asked, through ``simulate(..., test_ids=...)``, about
    the unseen ones on the held-out runs. The curriculum-blind baseline, asked about an unseen example, predicts the
    mean change of the fitted examples: the unseen-test baseline.

    Returns:
        The per-run frame of :func:`simflib.metrics.evaluate` over the unseen test examples, one row per simulator
        and held-out run, with a column ``n_unseen``.
    """
    seen, hidden = split_tests(fit.test_ids(), seed=seed, unseen=unseen)
    wanted = _unseen_capable(names)
    fitted = fit_registered(
        fit.select(tests=seen), val.select(tests=seen) if val is not None else None, names=wanted, **options
    )
    target = held_out.select(tests=hidden)
    frame = pd.concat(
        [evaluate(_OnTests(sim, hidden), target, name=label) for label, sim in fitted.items()], ignore_index=True
    )
    return frame.assign(n_unseen=len(hidden))


def score_unseen_training(
    fit: RunSet,
    val: RunSet | None,
    new_runs: RunSet,
    *,
    names: Iterable[str] | None = None,
    test_ids: Sequence[Any] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Fit on runs over a pool, then simulate runs over a larger pool that adds examples no fitted run used.

    ``new_runs`` come from a setting whose pool starts with the fit runs' pool (``n_extra`` in
    :class:`simflib.collect.CollectConfig`); the fit and validation runs are re-expressed over that larger pool, so
    every simulator is built for it and sees the added examples only when simulating. Simfluence gives them the mean
    influence of the observed examples (``unseen="mean"``), Simfluence-TE no influence beyond the time effects, the
    featurized simulators their features' prediction.

    Args:
        fit: Fit runs (pool of n examples).
        val: Validation runs.
        new_runs: Held-out runs over a pool of n' > n examples whose first n are the fit runs' pool.
        names: Registry names (default: all).
        test_ids: Simulate only these test examples (they need not be among those the simulators were fitted on,
            for simulators that support it: both unseen).
        **options: Passed to the simulators by name (``features=`` with the larger pool's features).

    Returns:
        The per-run frame of :func:`simflib.metrics.evaluate` on ``new_runs``.
    """
    pool = fit.meta.get("pool_ids")
    wider = new_runs.meta.get("pool_ids")
    if new_runs.n_train <= fit.n_train or (pool is not None and wider is not None and wider[: len(pool)] != pool):
        raise ValueError(
            f"score_unseen_training: the new runs' pool ({new_runs.n_train} examples) must extend the fit runs' "
            f"pool ({fit.n_train}) with new examples after the same ones"
        )

    def widened(runs: RunSet) -> RunSet:
        meta = {**runs.meta, "pool_ids": wider} if wider is not None else dict(runs.meta)
        return RunSet(list(runs), new_runs.n_train, meta=meta)

    if test_ids is None and new_runs.test_ids() != fit.test_ids():
        raise ValueError("score_unseen_training: the new runs score other test examples than the fit runs")
    wanted = list(names if names is not None else SIMULATORS) if test_ids is None else _unseen_capable(names)
    fitted = fit_registered(
        widened(fit), widened(val) if val is not None else None, names=wanted, **{"unseen": "mean", **options}
    )
    target = new_runs if test_ids is None else new_runs.select(tests=list(test_ids))
    frames = []
    for label, sim in fitted.items():
        scored = sim if test_ids is None else _OnTests(sim, list(test_ids))
        frames.append(evaluate(scored, target, name=label))
    return pd.concat(frames, ignore_index=True)
