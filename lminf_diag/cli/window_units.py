"""Replicated windows as independent units: ``--workers N`` / ``--ray ADDRESS`` on the analysis verbs.

A window's runs (the baseline first, then the patched runs from its shared prefix) are one unit:
a worker process (or Ray task) loads the model once, captures that window's traces and hands them
back; this process saves each trace exactly as a serial run does (`RunDir.save_trace`), so the run
folder, its resume and the report are the same. `tests/test_parallel.py` checks a 2-worker run
against a serial one.

Example:
    >>> import argparse
    >>> ns = portable_args(argparse.Namespace(model="lab-rope", _session=object(), func=print))
    >>> sorted(vars(ns))
    ['model']
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from lminf_diag.parallel import Unit, run_units

_SESSIONS: dict[str, Any] = {}  # per worker process: the loaded model and windows, by settings


def portable_args(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of `args` a worker can receive: no loaded session, no cached objects, no functions."""
    keep = {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)}
    return argparse.Namespace(**keep)


def capture_window(args: argparse.Namespace, window: int, todo: list[tuple[str, str]],
                   partial: str | None = None) -> list[tuple[str, Any, float]]:
    """The unit: [(trace key, Trace, seconds)] for the (label, key) pairs of one window; chunked
    captures checkpoint to `partial`/<key>.pt."""
    from pathlib import Path

    from lminf_diag.cli.pipeline import capture_trace, load_session
    from lminf_diag.cli.settings import settings_of

    ident = repr(sorted(vars(args).items()))
    session = _SESSIONS.get(ident)
    if session is None:
        _SESSIONS.clear()
        session = _SESSIONS[ident] = load_session(args)
    labels = [lab for lab, _ in todo]
    stride = settings_of(args).resolved_stride
    held: list[Any] = []
    out = []
    for lab, key in todo:
        t0 = time.perf_counter()
        share = lab == "baseline" and len(labels) > 1
        trace = capture_trace(session, args, lab, stride, window, prefix=held[0] if held else None,
                              on_prefix=held.append if share else None,
                              checkpoint=Path(partial) / f"{key}.pt" if partial else None)
        out.append((key, trace, round(time.perf_counter() - t0, 2)))
    return out


def capture_parallel(args: argparse.Namespace, run: Any, todo: dict[int, list[tuple[str, str]]],
                     stream: TextIO | None = None) -> dict[str, Any]:
    """Capture the missing (label, key) pairs of each window as one unit per window, in
    `args.workers` processes or as Ray tasks; saves each trace as it arrives; {key: Trace}."""
    stream = stream or sys.stderr
    ns = portable_args(args)
    from lminf_diag.cli.pipeline import partial_file

    folder = str(partial_file(run, "x").parent)
    units = [Unit(f"window {w + 1}", capture_window, (ns, w, pairs, folder)) for w, pairs in sorted(todo.items())]
    traces: dict[str, Any] = {}
    t0 = time.perf_counter()
    where = f"as Ray tasks ({args.ray})" if getattr(args, "ray", None) else f"in {args.workers} worker processes"
    print(f"capturing {len(units)} window(s) {where}", file=stream, flush=True)

    def done(name: str, result: list[tuple[str, Any, float]]) -> None:
        for key, trace, seconds in result:
            run.save_trace(key, trace, seconds=seconds)
            partial_file(run, key).unlink(missing_ok=True)
            traces[key] = trace
        print(f"{name} done ({len(traces)} trace(s) saved, {time.perf_counter() - t0:.0f} s)", file=stream,
              flush=True)

    run_units(units, workers=args.workers, ray_address=getattr(args, "ray", None), on_done=done)
    return traces


__all__ = ["capture_parallel", "capture_window", "portable_args"]
