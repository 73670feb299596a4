"""Training runs: what a simulator learns from and is judged against.

A :class:`Run` is one training run ``r = (c, L)`` of the paper's §2.1: a curriculum ``c`` (which training examples
each step consumed) and the loss trajectory of every test example. A :class:`RunSet` holds runs over one pool of
``n_train`` training examples and the same ``m`` test examples, with provenance.

File format (``RunSet.save`` / ``RunSet.load``), version 1. A NumPy ``.npz`` archive, read with
``allow_pickle=False``, holding only plain numeric arrays:

* ``header``: UTF-8 JSON as uint8: ``{"format": "simflib.runset", "version": 1, "n_train": int, "n_runs": int,
  "meta": {...}, "extras": [names], "sha256": hex}``. ``sha256`` digests every other array (name, dtype, shape,
  bytes) in sorted name order, so truncation, tampering and bit rot are detected.
* ``steps`` (R,) int64: T of each run; ``batch_sizes`` (R,) int64: b of each run.
* ``curricula`` (sum T, max b) int64: the runs' curricula stacked along steps, padded with -1 to the widest batch.
* ``losses`` (sum (T + 1), m) float64: the runs' loss trajectories stacked.
* ``extra.<name>`` (sum T, ...): optional per-step arrays (training loss, learning rate, ...) stacked.

Writes go to a temporary file in the destination folder, are flushed to disk, then renamed over the target, so a
failed or interrupted save never leaves a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from simflib._validation import as_curriculum, as_losses
from simflib.functional.linear import Observations, pad_batches

FORMAT = "simflib.runset"
VERSION = 1
PAPER_SPLIT = (20, 2, 10)
"""Runs used to fit, to choose lambda, and held out, in the paper's §5 (32 runs per setting)."""


@dataclass(frozen=True, init=False, eq=False)
class Run:
    """One training run: a curriculum and the per-step losses of m test examples.

    Attributes:
        curriculum: (T, b) int64; row ``t - 1`` holds the training-example indices of the batch consumed at step
            ``t``; ``-1`` pads a short batch.
        losses: (T + 1, m) float64; ``losses[0]`` is the loss before training, ``losses[t]`` after step ``t``.
        extras: Optional per-step arrays, each with leading dimension T (e.g. ``"train_loss"``,
            ``"learning_rate"``).
    """

    curriculum: NDArray[np.int64]
    losses: NDArray[np.float64]
    extras: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    def __init__(
        self,
        curriculum: ArrayLike,
        losses: ArrayLike,
        extras: Mapping[str, ArrayLike] | None = None,
        *,
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
            checked[str(name)] = arr
        object.__setattr__(self, "curriculum", curr)
        object.__setattr__(self, "losses", loss)
        object.__setattr__(self, "extras", checked)

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
        positions = range(len(self._runs))[index] if isinstance(index, slice) else [
            int(i) for i in np.asarray(index).ravel()]
        picked = [self._runs[i] for i in positions]
        meta = dict(self.meta)
        per_run = meta.get("runs")
        if isinstance(per_run, list) and len(per_run) == len(self._runs):  # per-run provenance follows its run
            meta["runs"] = [per_run[i] for i in positions]
        return RunSet(picked, self.n_train, meta)

    def __iter__(self) -> Iterator[Run]:
        return iter(self._runs)

    def __repr__(self) -> str:
        steps = sorted({r.n_steps for r in self._runs})
        return f"RunSet({len(self)} runs, n_train={self.n_train}, m={self.m}, T={steps if len(steps) > 1 else steps[0]})"

    # Derived views ---------------------------------------------------------------------------------------------
    @property
    def m(self) -> int:
        """Number of test examples."""
        return self._runs[0].m

    def observations(self) -> Observations:
        """All one-step observations ``(c_t, L_{t-1}, L_t)`` of all runs, for fitting (Eq. 2-3)."""
        b = max(r.curriculum.shape[1] for r in self._runs)
        batches = np.concatenate([pad_batches(r.curriculum, b) for r in self._runs])
        before = np.concatenate([r.losses[:-1] for r in self._runs])
        after = np.concatenate([r.losses[1:] for r in self._runs])
        return Observations(batches, before, after, self.n_train)

    def split(
        self, *, seed: int, sizes: tuple[int, int, int] = PAPER_SPLIT
    ) -> tuple[RunSet, RunSet, RunSet]:
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
            part = RunSet.__new__(RunSet)
            part._runs = [self._runs[i] for i in idx]
            part.n_train, part.meta = self.n_train, {**self.meta, "split": name, "run_indices": idx.tolist()}
            parts.append(part)
        return parts[0], parts[1], parts[2]

    # Storage ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run set atomically to ``path`` (a ``.npz`` file; see the module docstring for the format).

        Returns:
            The path written.
        """
        path = Path(path)
        arrays = self._to_arrays()
        header = {
            "format": FORMAT,
            "version": VERSION,
            "n_train": self.n_train,
            "n_runs": len(self),
            "meta": self.meta,
            "extras": sorted(self._runs[0].extras),
            "sha256": _digest(arrays),
        }
        arrays["header"] = np.frombuffer(json.dumps(header, allow_nan=False).encode(), dtype=np.uint8)
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunSet:
        """Read a run set written by :meth:`save` (or a folder written by :func:`simflib.collect.collect`), never
        unpickling anything.

        Raises:
            ValueError: If the file is missing, truncated, not a simflib run set, of an unknown version, holds
                pickled objects, or its contents do not match the recorded checksum.
        """
        path = Path(path)
        if path.is_dir():
            from simflib.collect import load_collected

            return load_collected(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such run-set file")
        with open(path, "rb") as f:  # our handle, closed even when numpy fails half-way
            if f.read(4) != b"PK\x03\x04":
                raise ValueError(f"{path}: truncated or not a simflib run-set file (not an .npz archive)")
            f.seek(0)
            try:
                with np.load(f, allow_pickle=False) as data:
                    arrays = {name: data[name] for name in data.files}
            except ValueError as err:  # object arrays refused because allow_pickle=False
                raise ValueError(f"{path}: refuses to load pickled data ({err})") from None
            except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
                raise ValueError(
                    f"{path}: truncated or not a simflib run-set file ({type(err).__name__}: {err})"
                ) from None
        header = _read_header(arrays.pop("header", None), path)
        if header["sha256"] != _digest(arrays):
            raise ValueError(f"{path}: contents do not match the recorded sha256: the file was modified or damaged")
        return cls._from_arrays(arrays, header, path)

    def _to_arrays(self) -> dict[str, NDArray[Any]]:
        b = max(r.curriculum.shape[1] for r in self._runs)
        names = sorted(self._runs[0].extras)
        for k, run in enumerate(self._runs):
            if sorted(run.extras) != names:
                raise ValueError(f"RunSet.save: run {k} has extras {sorted(run.extras)} but run 0 has {names}")
        arrays: dict[str, NDArray[Any]] = {
            "steps": np.array([r.n_steps for r in self._runs], dtype=np.int64),
            "batch_sizes": np.array([r.curriculum.shape[1] for r in self._runs], dtype=np.int64),
            "curricula": np.concatenate([pad_batches(r.curriculum, b) for r in self._runs]),
            "losses": np.concatenate([r.losses for r in self._runs]),
        }
        for name in names:
            arrays[f"extra.{name}"] = np.concatenate([np.asarray(r.extras[name]) for r in self._runs])
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: dict[str, NDArray[Any]], header: dict[str, Any], path: Path) -> RunSet:
        for key in ("steps", "batch_sizes", "curricula", "losses"):
            if key not in arrays:
                raise ValueError(f"{path}: missing array {key!r}")
        steps, widths = arrays["steps"], arrays["batch_sizes"]
        if steps.shape != (header["n_runs"],) or widths.shape != steps.shape:
            raise ValueError(f"{path}: 'steps'/'batch_sizes' do not describe {header['n_runs']} runs")
        if arrays["curricula"].shape[0] != steps.sum() or arrays["losses"].shape[0] != steps.sum() + len(steps):
            raise ValueError(f"{path}: array lengths disagree with the recorded steps per run")
        runs = []
        c0 = l0 = 0
        for k, (t, b) in enumerate(zip(steps.tolist(), widths.tolist())):
            extras = {name: arrays[f"extra.{name}"][c0 : c0 + t] for name in header["extras"]}
            runs.append(
                Run(
                    arrays["curricula"][c0 : c0 + t, :b],
                    arrays["losses"][l0 : l0 + t + 1],
                    extras,
                    where=f"{path}: run {k}",
                )
            )
            c0, l0 = c0 + t, l0 + t + 1
        return cls(runs, header["n_train"], header["meta"])


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; saved data is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digest(arrays: Mapping[str, NDArray[Any]]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _read_header(raw: NDArray[Any] | None, path: Path) -> dict[str, Any]:
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: not a simflib run-set file (no header)")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a simflib run-set file (format {header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: run-set format version {header.get('version')!r}; this simflib reads version {VERSION}")
    for key, kind in (("n_train", int), ("n_runs", int), ("meta", dict), ("extras", list), ("sha256", str)):
        if not isinstance(header.get(key), kind):
            raise ValueError(f"{path}: header field {key!r} missing or not a {kind.__name__}")
    return header


def _check_json(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be JSON-serialisable (str, numbers, lists, dicts): {err}") from None
