"""Independent units of work run serially, in local worker processes, or as Ray tasks.

Replicated windows, sweep cells and lab seeds do not depend on each other. `run_units` runs a
list of `Unit`s (a module-level function and its picklable arguments) and hands each result to
`on_done` *in this process*, as it arrives: the caller saves it exactly as a serial run would
(the same cell files, the same run.json steps, written by one process only), so a parallel run
resumes like a serial one and gives the same files.

- ``workers <= 1``: in this process, in order;
- ``workers = N``: N local processes (``spawn``), each limited to ``threads`` CPU threads
  (default: the cores divided among the workers), so N workers do not oversubscribe the CPU;
- ``ray_address`` given (``"auto"``, ``"local"`` or ``"ray://host:10001"``; needs the optional
  ``ray`` extra): Ray tasks on that cluster, each taking one GPU when the cluster has GPUs.

No scheduler of our own: the pool (or Ray) schedules; we only gather.

Example:
    >>> got = {}
    >>> run_units([Unit("a", pow, (2, 3)), Unit("b", pow, (3, 2))], on_done=got.__setitem__)
    >>> got
    {'a': 8, 'b': 9}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lminf_diag.errors import InvalidArgumentError


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: ``fn(*args)`` (fn at module level, so workers can import it)."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = field(default=())


def default_threads(workers: int) -> int:
    """CPU threads per worker: the machine's cores shared out (at least 1).

    >>> default_threads(10_000)
    1
    """
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    from lminf_diag.util.allocator import keep_freed_memory

    keep_freed_memory()  # as in the `diag` process that starts the workers

    torch.set_num_threads(threads)
    try:  # no per-worker weight-loading bars: the main process prints one line per finished unit
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _call(fn: Callable[..., Any], args: tuple[Any, ...], threads: int | None = None) -> Any:
    if threads is not None:
        _init_worker(threads)
    return fn(*args)


def check_workers(workers: int, ray_address: str | None = None) -> None:
    """Clear errors for settings that cannot run (before any work starts)."""
    if workers < 1:
        raise InvalidArgumentError(f"--workers {workers}: give 1 (serial) or more local processes")
    if ray_address is not None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise InvalidArgumentError(
                f"--ray {ray_address}: Ray is not installed; install the optional extra "
                "(pip install 'lminf_diag[ray]') or run with --workers N (local processes)"
            ) from err


def run_units(
    units: Sequence[Unit],
    *,
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    on_done: Callable[[str, Any], None] | None = None,
) -> None:
    """Run every unit; call ``on_done(key, result)`` here as each finishes (see the module docstring).

    A unit that fails stops the run with its error once the finished ones have been handed to
    `on_done` (so they are saved and a rerun resumes after them).
    """
    check_workers(workers, ray_address)
    done = on_done or (lambda key, result: None)
    if not units:
        return
    if ray_address is not None:
        _run_ray(units, ray_address, threads, done)
    elif workers <= 1 or len(units) == 1:
        for u in units:
            done(u.key, u.fn(*u.args))
    else:
        _run_pool(units, workers, threads or default_threads(workers), done)


def _run_pool(units: Sequence[Unit], workers: int, threads: int, done: Callable[[str, Any], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # a clean interpreter per worker: no forked torch thread pools
    first_error: BaseException | None = None
    with ProcessPoolExecutor(max_workers=min(workers, len(units)), mp_context=ctx,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(u.fn, *u.args): u.key for u in units}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = pending.pop(fut)
                err = fut.exception()
                if err is not None:
                    first_error = first_error or err
                    for other in pending:
                        other.cancel()
                    continue
                done(key, fut.result())
    if first_error is not None:
        raise first_error


def _run_ray(units: Sequence[Unit], address: str, threads: int | None, done: Callable[[str, Any], None]) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 log_to_driver=False, include_dashboard=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=threads or 1, num_gpus=gpus)(_call)
    pending = {task.remote(u.fn, u.args, threads or 1): u.key for u in units}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            key = pending.pop(ref)
            done(key, ray.get(ref))


__all__ = ["Unit", "check_workers", "default_threads", "run_units"]
