"""Where a sweep's runs execute: ``local`` (a process pool on this machine, the default) or
``ray`` (a Ray task per run, on a local Ray instance started for the sweep or on a cluster).

Both carry the same :class:`~nodes.sweep.task.Task` to the same
:func:`~nodes.sweep.task.execute` and hand each :class:`~nodes.sweep.task.Result` to ``done``
as it comes, so they write the same bytes. A run whose worker dies is tried again, three
attempts in all, and then reported as an error; the other runs go on. (A run that fails inside
is not retried: it is a result, "error" with its message.)
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from nodes.sweep.task import Result, Task, execute

ATTEMPTS = 3
#: workers forked from a clean server process, never from the driver: the driver may hold
#: threads (Ray's, a served network's) that a fork would copy in the middle of their work
_CONTEXT = multiprocessing.get_context(
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
ENGINES = ("local", "ray")
Done = Callable[[Result], None]


class EngineError(RuntimeError):
    """The engine could not start (e.g. Ray is not installed, or no cluster at --address)."""


def run_tasks(tasks: Sequence[Task], engine: str, jobs: int, address: str | None,
              done: Done) -> None:
    if not tasks:
        return
    if engine == "ray":
        run_on_ray(tasks, jobs, address, done)
    else:
        run_locally(tasks, jobs, done)


def run_locally(tasks: Sequence[Task], jobs: int, done: Done) -> None:
    """A process pool of ``jobs`` workers. A worker that dies breaks the pool: the runs it
    took down with it go to a fresh pool, each at most ATTEMPTS times."""
    pending = {task.run_id: (task, 0) for task in tasks}
    while pending:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(pending))),
                                 mp_context=_CONTEXT) as pool:
            futures = {pool.submit(execute, task): task for task, _ in pending.values()}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    tries = pending[task.run_id][1] + 1
                    if tries < ATTEMPTS:
                        pending[task.run_id] = (task, tries)
                        continue
                    result = Result(task.run_id, "error",
                                    f"its worker process died {tries} times")
                del pending[task.run_id]
                done(result)


def run_on_ray(tasks: Sequence[Task], jobs: int, address: str | None, done: Done) -> None:
    """One Ray task per run (``num_cpus=1``, retried by Ray when its worker dies). Without
    ``address``, a local Ray instance with ``jobs`` CPUs is started for the sweep and stopped
    after it; with one, the sweep joins that cluster, whose nodes need qkdsim installed."""
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError:
        raise EngineError("the ray engine needs Ray: pip install 'qkdsim[ray]'") from None
    ours = not ray.is_initialized()
    if ours:
        options = {"address": address} if address else {
            "num_cpus": max(1, jobs), "include_dashboard": False,
            "object_store_memory": 256 * 1024 * 1024}
        try:
            ray.init(log_to_driver=False, logging_level=logging.WARNING, **options)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EngineError(f"cannot start or reach Ray{f' at {address}' if address else ''}:"
                              f" {error}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=ATTEMPTS - 1)(execute)
        refs = {remote.remote(task): task for task in tasks}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                task = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except RayError as error:
                    result = Result(task.run_id, "error", f"failed on Ray after {ATTEMPTS} "
                                    f"attempts: {type(error).__name__}")
                done(result)
    finally:
        if ours:
            ray.shutdown()
