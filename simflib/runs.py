"""Training runs: what a simulator learns from and is judged against.

A :class:`Run` is one training run ``r = (c, L)`` of the paper's §2.1: a curriculum ``c`` (which training examples
each step consumed) and the loss trajectory of every test example, optionally with the trajectories of other
per-example metrics (accuracy, exact match, ...). A :class:`RunSet` holds runs over one pool of ``n_train``
training examples and the same ``m`` test examples, with provenance.

File format (``RunSet.save`` / ``RunSet.load``): a :mod:`simflib.storage` archive holding only plain numeric arrays:

* ``header``: ``{"format": "simflib.runset", "version": 2, "n_train": int, "n_runs": int, "meta": {...},
  "extras": [names], "metrics": [names], "covers": "header", "sha256": hex}``. The checksum covers every array and
  every other header field, so truncation, tampering (of the data or of ``n_train``) and bit rot are detected.
* ``steps`` (R,) int64: T of each run; ``batch_sizes`` (R,) int64: b of each run.
* ``curricula`` (sum T, max b) int64: the runs' curricula stacked along steps, padded with -1 to the widest batch.
* ``losses`` (sum (T + 1), m) float64: the runs' loss trajectories stacked.
* ``extra.<name>`` (sum T, ...): optional per-step arrays (training loss, learning rate, ...) stacked.
* ``metric.<name>`` (sum (T + 1), m) float64: optional per-example metric trajectories, stacked like the losses.
* ``generations`` (sum (T + 1), m, G) int32: optional token ids of each test example's greedy generation after every
  step, -1 after its end (the header's ``"generations": true`` says the file has them).

Version 1 files (no metrics; a checksum over the arrays only) still load; the header of such a file is checked
where its context allows (a collected folder compares ``n_train`` with its ``config.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import as_curriculum, as_losses, pad_batches
from simflib.storage import fingerprint, read_archive, run_file_name, run_files, write_archive

FORMAT = "simflib.runset"
VERSION = 2
READABLE = (1, 2)
PAPER_SPLIT = (20, 2, 10)
"""Runs used to fit, to choose lambda, and held out, in the paper's §5 (32 runs per setting)."""


@dataclass(frozen=True, init=False, eq=False)
class Run:
    """One training run: a curriculum and the per-step losses of m test examples.

    The arrays are copies of what was passed, and read-only: a run cannot change after it is made.

    Attributes:
        curriculum: (T, b) int64; row ``t - 1`` holds the training-example indices of the batch consumed at step
            ``t``; ``-1`` pads a short batch.
        losses: (T + 1, m) float64; ``losses[0]`` is the loss before training, ``losses[t]`` after step ``t``.
        extras: Optional per-step arrays, each with leading dimension T (e.g. ``"train_loss"``,
            ``"learning_rate"``).
        metrics: Optional per-example metric trajectories, each (T + 1, m) like ``losses`` (e.g. ``"accuracy"``,
            ``"exact_match"``); finite values.
        generations: Optional (T + 1, m, G) int32 token ids of each test example's greedy generation before training
            and after every step, -1 after its end; None when the task is not a generation task.
    """

    curriculum: NDArray[np.int64]
    losses: NDArray[np.float64]
    extras: Mapping[str, NDArray[Any]] = field(default_factory=dict)
    metrics: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    generations: NDArray[np.int32] | None = None

    def __init__(
        self,
        curriculum: ArrayLike,
        losses: ArrayLike,
        extras: Mapping[str, ArrayLike] | None = None,
        *,
        metrics: Mapping[str, ArrayLike] | None = None,
        generations: ArrayLike | None = None,
        where: str = "run",
    ) -> None:
        curr = as_curriculum(curriculum, where=f"{where}: curriculum")
        loss = as_losses(losses, where=f"{where}: losses")
        if curr.ndim != 2:
            raise ValueError(f"{where}: curriculum must have shape (T, b), got {curr.shape}")
        if loss.ndim != 2:
            raise ValueError(f"{where}: losses must have shape (T + 1, m), got {loss.shape}")
        if loss.shape[0] != curr.shape[0] + 1:
            raise ValueError(
                f"{where}: curriculum has T={curr.shape[0]} steps, so losses needs T + 1 = {curr.shape[0] + 1} "
                f"rows (L_0 before training, then one per step), got {loss.shape[0]}"
            )
        if curr.shape[0] == 0:
            raise ValueError(f"{where}: a run needs at least one step")
        if loss.shape[1] == 0:
            raise ValueError(f"{where}: losses has no test examples (m = 0)")
        checked: dict[str, NDArray[Any]] = {}
        for name, value in (extras or {}).items():
            arr = np.asarray(value)
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise ValueError(f"{where}: extra {name!r} must be numeric, got dtype {arr.dtype}")
            if arr.ndim == 0 or arr.shape[0] != curr.shape[0]:
                raise ValueError(
                    f"{where}: extra {name!r} must have leading dimension T={curr.shape[0]}, got shape {arr.shape}"
                )
            checked[str(name)] = _frozen(arr)
        named: dict[str, NDArray[np.float64]] = {}
        for name, value in (metrics or {}).items():
            if not isinstance(name, str) or not name or name == "loss":
                raise ValueError(f"{where}: metric names must be non-empty strings other than 'loss', got {name!r}")
            arr = as_losses(value, where=f"{where}: metric {name!r}")
            if arr.shape != loss.shape:
                raise ValueError(
                    f"{where}: metric {name!r} must have the losses' shape (T + 1, m) = {loss.shape}, got {arr.shape}"
                )
            named[name] = _frozen(arr)
        tokens = None
        if generations is not None:
            tokens = np.asarray(generations)
            if tokens.dtype.kind not in "iu" or tokens.ndim != 3 or tokens.shape[:2] != loss.shape:
                raise ValueError(
                    f"{where}: generations must be integer token ids of shape (T + 1, m, G) with (T + 1, m) = "
                    f"{loss.shape}, got {tokens.dtype} {tokens.shape}"
                )
            if tokens.size and (tokens.min() < -1 or tokens.max() > np.iinfo(np.int32).max):
                raise ValueError(f"{where}: generations hold token ids outside -1 .. 2**31 - 1")
            tokens = _frozen(tokens.astype(np.int32))
        object.__setattr__(self, "curriculum", _frozen(curr))
        object.__setattr__(self, "losses", _frozen(loss))
        object.__setattr__(self, "extras", checked)
        object.__setattr__(self, "metrics", named)
        object.__setattr__(self, "generations", tokens)

    def trajectory(self, metric: str = "loss") -> NDArray[np.float64]:
        """The (T + 1, m) trajectory of ``metric``: ``"loss"`` or one of :attr:`metrics`.

        Raises:
            ValueError: Naming the metric and those the run has.
        """
        if metric == "loss":
            return self.losses
        if metric not in self.metrics:
            raise ValueError(
                f"run has no metric {metric!r}; it has: loss{''.join(', ' + k for k in sorted(self.metrics))}"
            )
        return self.metrics[metric]

    @property
    def n_steps(self) -> int:
        """Number of training steps T."""
        return int(self.curriculum.shape[0])

    @property
    def m(self) -> int:
        """Number of test examples."""
        return int(self.losses.shape[1])

    @property
    def initial_loss(self) -> NDArray[np.float64]:
        """(m,) losses before training, L_0."""
        return self.losses[0]


class RunSet(Sequence[Run]):
    """Runs over one pool of ``n_train`` training examples and the same ``m`` test examples.

    Args:
        runs: The runs (at least one).
        n_train: Size of the training pool; every curriculum index must be below it.
        meta: JSON-serialisable provenance (task, model, method, seeds, package versions, test example ids, ...).

    Raises:
        ValueError: On an empty set, a run with a different number of test examples, or an index out of range,
            naming the run.
        TypeError: On an element that is not a :class:`Run`, naming its position.
    """

    def __init__(self, runs: Sequence[Run] | Iterator[Run], n_train: int, meta: Mapping[str, Any] | None = None):
        runs = list(runs)
        if not runs:
            raise ValueError("RunSet: no runs given (an empty run set cannot be fitted or evaluated)")
        if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
            raise ValueError(f"RunSet: n_train must be a positive integer, got {n_train!r}")
        m = runs[0].m if isinstance(runs[0], Run) else None
        for k, run in enumerate(runs):
            if not isinstance(run, Run):
                raise TypeError(f"RunSet: run {k} is a {type(run).__name__}, not a simflib.Run")
            if run.m != m:
                raise ValueError(f"RunSet: run {k} has m={run.m} test examples but run 0 has m={m}")
            as_curriculum(run.curriculum, n_train=int(n_train), where=f"run {k}: curriculum")
        self._runs: list[Run] = runs
        self.n_train = int(n_train)
        self.meta: dict[str, Any] = dict(meta or {})
        _check_json(self.meta, "RunSet: meta")

    # Sequence protocol -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._runs)

    @overload
    def __getitem__(self, index: int) -> Run: ...
    @overload
    def __getitem__(self, index: slice | Sequence[int] | NDArray[np.integer]) -> RunSet: ...

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if isinstance(index, (int, np.integer)):
            return self._runs[index]
        positions = range(len(self._runs))[index] if isinstance(index, slice) else np.asarray(index).ravel()
        if not len(positions):
            raise ValueError("RunSet: no runs selected (an empty run set cannot be fitted or evaluated)")
        return self._select([int(i) for i in positions])

    def _select(self, positions: list[int]) -> RunSet:
        """The runs at ``positions``, with per-run provenance (``meta["runs"]``) following its run (``split`` may
        select none: a validation part of size 0)."""
        part = RunSet.__new__(RunSet)  # the runs were checked when this set was made
        part._runs = [self._runs[i] for i in positions]
        part.n_train, part.meta = self.n_train, dict(self.meta)
        per_run = self.meta.get("runs")
        if isinstance(per_run, list) and len(per_run) == len(self._runs):
            part.meta["runs"] = [per_run[i] for i in positions]
        return part

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs)

    def __repr__(self) -> str:
        steps = sorted({r.n_steps for r in self._runs})
        return (
            f"RunSet({len(self)} runs, n_train={self.n_train}, m={self.m}, T={steps if len(steps) > 1 else steps[0]})"
        )

    # Derived views ---------------------------------------------------------------------------------------------
    @property
    def m(self) -> int:
        """Number of test examples."""
        return self._runs[0].m

    def split(self, *, seed: int, sizes: tuple[int, int, int] = PAPER_SPLIT) -> tuple[RunSet, RunSet, RunSet]:
        """Randomly split into (fit, validation, held-out) run sets, as the paper's §5 does (20 / 2 / 10 of 32).

        Args:
            seed: Seed of the permutation.
            sizes: Number of runs in each part; runs beyond their sum are left out.

        Raises:
            ValueError: If the set has fewer runs than ``sum(sizes)`` or a size is negative or the fit part empty.
        """
        if len(sizes) != 3 or any(int(s) < 0 for s in sizes) or int(sizes[0]) < 1:
            raise ValueError(f"split: sizes must be three counts (fit >= 1, validation, held-out), got {sizes}")
        if sum(sizes) > len(self):
            raise ValueError(f"split: sizes {tuple(sizes)} need {sum(sizes)} runs but the set has {len(self)}")
        order = np.random.default_rng(seed).permutation(len(self))
        fit, val, test = np.split(order[: sum(sizes)], np.cumsum(sizes)[:2])
        parts = []
        for name, idx in (("fit", fit), ("validation", val), ("held-out", test)):
            part = self._select(idx.tolist())
            part.meta.update({"split": name, "run_indices": idx.tolist()})
            parts.append(part)
        return parts[0], parts[1], parts[2]

    # Storage ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run set atomically to ``path`` (a ``.npz`` file; see the module docstring for the format).

        Returns:
            The path written.
        """
        header = {
            "format": FORMAT,
            "version": VERSION,
            "n_train": self.n_train,
            "n_runs": len(self),
            "meta": self.meta,
            "extras": sorted(self._runs[0].extras),
            "metrics": sorted(self._runs[0].metrics),
            "generations": self._runs[0].generations is not None,
        }
        return write_archive(path, self._to_arrays(), header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunSet:
        """Read a run set written by :meth:`save` (or a folder written by :func:`simflib.collect.collect`), never
        unpickling anything.

        Raises:
            ValueError: If the file is missing, truncated, damaged, not a simflib run set, of an unknown version,
                holds anything but plain numbers, declares sizes it does not hold, or its contents do not match
                the recorded checksum; the message names the file.
        """
        path = Path(path)
        if path.is_dir():
            return cls.load_folder(path)
        header, arrays = read_archive(path, fmt=FORMAT, versions=READABLE)
        for key, kind in (("n_train", int), ("n_runs", int), ("meta", dict), ("extras", list)):
            if not isinstance(header.get(key), kind):
                raise ValueError(f"{path}: header field {key!r} missing or not a {kind.__name__}")
        header.setdefault("metrics", [])
        header.setdefault("generations", False)
        if not isinstance(header["generations"], bool):
            raise ValueError(f"{path}: header field 'generations' is not true or false")
        return cls._from_arrays(arrays, header, path)

    @classmethod
    def load_folder(cls, folder: str | os.PathLike[str], *, n_runs: int | None = None) -> RunSet:
        """Load a run folder (``config.json`` and one ``run-NNNNN.npz`` per run) as one run set, in run-index order.

        The meta is ``config.json``'s, plus ``"runs"``: each run file's own meta (its ``run_index``, device, ...).

        Args:
            folder: A folder written by :func:`simflib.collect.collect`.
            n_runs: Load only runs 0..n_runs-1, which must all be there. A setting extended beyond the paper's 32
                runs keeps its first 32 as they were, so ``n_runs=32`` reproduces every number computed before the
                extension (a random split permutes all the runs it is given).

        Raises:
            ValueError: Naming the file, if ``config.json`` is missing, unreadable or edited (its configuration no
                longer matches its fingerprint); a run file is damaged, of another configuration or pool size,
                holds another run than its name says, or is not named like a run file; or one of the first
                ``n_runs`` runs is missing.
        """
        out = Path(folder)
        path = out / "config.json"
        if not path.is_file():
            raise ValueError(f"{out}: not a collected run folder (no config.json)")
        try:
            meta = json.loads(path.read_text())
            config, recorded = meta["config"], meta["fingerprint"]
            n_pool = config["n_pool"] + config.get("n_extra", 0)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
        if fingerprint(config) != recorded:
            raise ValueError(
                f"{path}: the configuration does not match its fingerprint {recorded}: the file was edited; "
                f"restore it (git checkout) or record the runs again"
            )
        files = run_files(out)
        if n_runs is not None:
            if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
                raise ValueError(f"{out}: n_runs must be a positive integer, got {n_runs!r}")
            missing = [run_file_name(k) for k in range(n_runs) if k not in files]
            if missing:
                raise ValueError(f"{out}: n_runs={n_runs} asks for runs that are not there: {', '.join(missing[:5])}")
            files = {k: f for k, f in files.items() if k < n_runs}
        runs, infos = [], []
        for index, file in files.items():
            one = cls.load(file)
            if one.meta.get("fingerprint") != recorded:
                raise ValueError(
                    f"{file}: fingerprint {one.meta.get('fingerprint')} differs from the folder's {recorded}"
                )
            if one.meta.get("run_index") != index:
                raise ValueError(f"{file}: holds run {one.meta.get('run_index')}, not run {index} as its name says")
            if one.n_train != n_pool or len(one) != 1:
                raise ValueError(
                    f"{file}: holds {len(one)} run(s) over a pool of {one.n_train}; the folder's runs are single runs "
                    f"over a pool of {n_pool}"
                )
            runs.append(one[0])
            infos.append(one.meta)
        if not runs:
            raise ValueError(f"{out}: no completed runs yet")
        meta["runs"] = infos
        return cls(runs, n_pool, meta=meta)

    def test_ids(self) -> list[Any]:
        """The id of each test example (column), from ``meta["test_ids"]`` when it names all m, else its position."""
        ids = self.meta.get("test_ids")
        if isinstance(ids, list) and len(ids) == self.m:
            return list(ids)
        return list(range(self.m))

    def select(self, *, tests: Sequence[Any]) -> RunSet:
        """The same runs restricted to some test examples (columns), in the order given, their ids kept.

        This is how a simulator is fitted on some test examples and asked about others (the generalization protocol
        of :mod:`simflib.experiments`): ``runs.select(tests=seen)`` to fit, ``runs.select(tests=unseen)`` to score.

        Args:
            tests: Test example ids, as :meth:`test_ids` names them (positions when the set has no ids).

        Raises:
            ValueError: On an empty selection, a repeated id, or an id the set does not have (naming it).
        """
        wanted = [t.item() if isinstance(t, np.generic) else t for t in tests]
        if not wanted:
            raise ValueError("RunSet.select: no test examples selected")
        ids = self.test_ids()
        column = {key: k for k, key in enumerate(ids)}
        unknown = [t for t in wanted if t not in column]
        if unknown:
            raise ValueError(
                f"RunSet.select: test examples {unknown[:5]} are not in this run set (its ids: {ids[:3]}...)"
            )
        if len(set(wanted)) != len(wanted):
            raise ValueError("RunSet.select: a test example is selected twice")
        cols = np.array([column[t] for t in wanted])
        runs = [
            Run(
                r.curriculum,
                r.losses[:, cols],
                r.extras,
                metrics={k: v[:, cols] for k, v in r.metrics.items()},
                generations=None if r.generations is None else r.generations[:, cols],
            )
            for r in self._runs
        ]
        part = RunSet.__new__(RunSet)
        part._runs, part.n_train, part.meta = runs, self.n_train, dict(self.meta)
        part.meta["test_ids"] = wanted
        return part

    def metric_names(self) -> list[str]:
        """``"loss"`` and the names of the per-example metrics every run records."""
        return ["loss", *sorted(self._runs[0].metrics)]

    def on_metric(self, metric: str) -> RunSet:
        """The same runs with ``metric``'s trajectories in place of the losses, so that any simulator, fitted and
        scored on "losses", simulates that metric (``"loss"`` returns the set itself).

        Raises:
            ValueError: If a run lacks the metric, naming the metric, the run and the metrics it has.
        """
        if metric == "loss":
            return self
        runs = []
        for position, (index, run) in enumerate(zip(self.run_indices(), self._runs)):
            if metric not in run.metrics:
                raise ValueError(
                    f"run {index} (position {position}) has no metric {metric!r}; it has: "
                    f"{', '.join(['loss', *sorted(run.metrics)])}"
                )
            runs.append(Run(run.curriculum, run.metrics[metric], run.extras))
        part = RunSet.__new__(RunSet)
        part._runs, part.n_train, part.meta = runs, self.n_train, {**self.meta, "metric": metric}
        return part

    def run_indices(self) -> list[int]:
        """The run index of each run, from its provenance (``meta["runs"]``) when it has one, else its position."""
        infos = self.meta.get("runs")
        if isinstance(infos, list) and len(infos) == len(self) and all("run_index" in i for i in infos):
            return [int(i["run_index"]) for i in infos]
        return list(range(len(self)))

    def _to_arrays(self) -> dict[str, NDArray[Any]]:
        b = max(r.curriculum.shape[1] for r in self._runs)
        names = sorted(self._runs[0].extras)
        metrics = sorted(self._runs[0].metrics)
        for k, run in enumerate(self._runs):
            if sorted(run.extras) != names:
                raise ValueError(f"RunSet.save: run {k} has extras {sorted(run.extras)} but run 0 has {names}")
            if sorted(run.metrics) != metrics:
                raise ValueError(f"RunSet.save: run {k} has metrics {sorted(run.metrics)} but run 0 has {metrics}")
            if (run.generations is None) != (self._runs[0].generations is None):
                raise ValueError(f"RunSet.save: run {k} {'lacks' if run.generations is None else 'has'} generations")
        arrays: dict[str, NDArray[Any]] = {
            "steps": np.array([r.n_steps for r in self._runs], dtype=np.int64),
            "batch_sizes": np.array([r.curriculum.shape[1] for r in self._runs], dtype=np.int64),
            "curricula": np.concatenate([pad_batches(r.curriculum, b) for r in self._runs]),
            "losses": np.concatenate([r.losses for r in self._runs]),
        }
        for name in names:
            arrays[f"extra.{name}"] = np.concatenate([np.asarray(r.extras[name]) for r in self._runs])
        for name in metrics:
            arrays[f"metric.{name}"] = np.concatenate([r.metrics[name] for r in self._runs])
        tokens = [r.generations for r in self._runs if r.generations is not None]
        if tokens:
            width = max(g.shape[2] for g in tokens)
            arrays["generations"] = np.concatenate(
                [np.pad(g, ((0, 0), (0, 0), (0, width - g.shape[2])), constant_values=-1) for g in tokens]
            )
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: dict[str, NDArray[Any]], header: dict[str, Any], path: Path) -> RunSet:
        for key in ("steps", "batch_sizes", "curricula", "losses"):
            if key not in arrays:
                raise ValueError(f"{path}: missing array {key!r}")
        for kind, names in (("extra", header["extras"]), ("metric", header["metrics"])):
            for name in names:
                if f"{kind}.{name}" not in arrays:
                    raise ValueError(f"{path}: the header lists {kind} {name!r} but the file has no array for it")
        steps, widths = arrays["steps"], arrays["batch_sizes"]
        if steps.shape != (header["n_runs"],) or widths.shape != steps.shape:
            raise ValueError(f"{path}: 'steps'/'batch_sizes' do not describe {header['n_runs']} runs")
        if (steps < 1).any() or (widths < 1).any() or (widths > arrays["curricula"].shape[-1]).any():
            raise ValueError(f"{path}: 'steps'/'batch_sizes' hold impossible values")
        total = int(steps.sum())
        if arrays["curricula"].shape[0] != total or arrays["losses"].shape[0] != total + len(steps):
            raise ValueError(f"{path}: array lengths disagree with the recorded steps per run")
        tokens = arrays.get("generations") if header["generations"] else None
        if header["generations"] and (tokens is None or tokens.ndim != 3 or tokens.shape[0] != total + len(steps)):
            raise ValueError(f"{path}: the header promises generations but the file has none of the right length")
        runs = []
        c0 = l0 = 0
        for k, (t, b) in enumerate(zip(steps.tolist(), widths.tolist())):
            extras = {name: arrays[f"extra.{name}"][c0 : c0 + t] for name in header["extras"]}
            metrics = {name: arrays[f"metric.{name}"][l0 : l0 + t + 1] for name in header["metrics"]}
            runs.append(
                Run(
                    arrays["curricula"][c0 : c0 + t, :b],
                    arrays["losses"][l0 : l0 + t + 1],
                    extras,
                    metrics=metrics,
                    generations=None if tokens is None else tokens[l0 : l0 + t + 1],
                    where=f"{path}: run {k}",
                )
            )
            c0, l0 = c0 + t, l0 + t + 1
        try:
            return cls(runs, header["n_train"], header["meta"])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _frozen(arr: NDArray[Any]) -> NDArray[Any]:
    """A read-only copy."""
    out = np.array(arr, copy=True)
    out.flags.writeable = False
    return out


def _check_json(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be JSON-serialisable (str, numbers, lists, dicts): {err}") from None
