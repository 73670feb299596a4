"""Where :func:`simflib.collect.collect` trains runs besides this process: a cluster scheduler through ``submitit``.

Any ``concurrent.futures.Executor`` can train runs (a process pool, a ``dask.distributed`` client's
``get_executor()``). :class:`SubmititExecutor` is one for a SLURM cluster: ``collect`` hands it all missing runs at
once, and it submits them as one job array (one job per run, at most ``array_parallelism`` at a time); each result
comes back to the submitting process, which writes the run file as soon as its job ends, so an interrupted collection
resumes like a local one. With ``cluster="local"`` the jobs run as subprocesses of this machine (how it is tested);
with ``cluster="debug"``, in this process.

Usage::

    from simflib.executors import SubmititExecutor
    executor = SubmititExecutor("logs/submitit", timeout_min=120, slurm_partition="gpu", gpus_per_node=1)
    collect(config, "data/runs/my-setting", executor=executor)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

__all__ = ["SubmititExecutor"]


class SubmititExecutor(Executor):
    """A ``concurrent.futures.Executor`` over ``submitit`` jobs (SLURM job arrays, or local subprocesses).

    Args:
        folder: Where submitit keeps each job's pickled call, logs and result (``%j`` is the job id).
        cluster: ``None`` (SLURM if available, else local), ``"slurm"``, ``"local"`` or ``"debug"``.
        poll_s: Seconds between checks of the jobs' states.
        **parameters: Passed to ``AutoExecutor.update_parameters`` (``timeout_min``, ``slurm_partition``,
            ``gpus_per_node``, ``cpus_per_task``, ``slurm_array_parallelism``, ...).
    """

    def __init__(
        self, folder: str | Path, *, cluster: str | None = None, poll_s: float = 2.0, **parameters: Any
    ) -> None:
        import submitit

        self._executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        if parameters:
            self._executor.update_parameters(**parameters)
        self.poll_s = float(poll_s)
        self._pending: list[tuple[Any, Future[Any]]] = []
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Submit one call as one job."""
        if self._closed:
            raise RuntimeError("SubmititExecutor: cannot submit after shutdown")
        return self._watch([self._executor.submit(fn, *args, **kwargs)])[0]

    def submit_array(self, fn: Callable[..., Any], calls: Sequence[Sequence[Any]]) -> list[Future[Any]]:
        """Submit ``fn(*call)`` for every call as one job array (SLURM submits it at once)."""
        if self._closed:
            raise RuntimeError("SubmititExecutor: cannot submit after shutdown")
        if not calls:
            return []
        columns = [list(column) for column in zip(*calls)]
        return self._watch(self._executor.map_array(fn, *columns))

    def _watch(self, jobs: Sequence[Any]) -> list[Future[Any]]:
        futures: list[Future[Any]] = []
        with self._lock:
            for job in jobs:
                future: Future[Any] = Future()
                future.set_running_or_notify_cancel()
                self._pending.append((job, future))
                futures.append(future)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._poll, name="submitit-watcher", daemon=True)
                self._watcher.start()
        return futures

    def _poll(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                finished = [(job, future) for job, future in self._pending if job.done()]
                self._pending = [(job, future) for job, future in self._pending if not job.done()]
            for job, future in finished:
                try:
                    future.set_result(job.result())
                except Exception as err:  # noqa: BLE001 - the job's failure goes to whoever waits on it
                    future.set_exception(err)
            time.sleep(self.poll_s)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting jobs; with ``wait``, block until every submitted job has finished."""
        self._closed = True
        if cancel_futures:
            with self._lock:
                for job, future in self._pending:
                    job.cancel(check=False)
                    future.cancel()
                self._pending = []
        if wait and self._watcher is not None:
            self._watcher.join()
