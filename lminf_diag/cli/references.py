"""`--recompute` and `--control shuffled` for the replicated analysis verbs (`diag report`).

Both are references of the loss analyzer, per window, kept in the run folder so that a rerun
resumes and adding one to a finished run computes only it:
- `--recompute`: the re-computation reference (`evaluate.references.recompute_windows`), cells
  `recompute/w<K>`;
- `--control shuffled`: the baseline on a paragraph-shuffled copy of each window, traces
  `control[@wK]`.
"""

from __future__ import annotations

import argparse
from typing import Any

from lminf_diag.cli import options


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """--recompute, --recompute-stride, --control."""
    g = p.add_argument_group("loss references (off by default: each costs more forward passes per window)")
    g.add_argument(
        "--recompute",
        action="store_true",
        help="add the in-distribution reference on the same tokens: every token past T predicted from its last "
        "T tokens, re-encoded (strided: about 1 + (length - T) / stride extra passes of T tokens per window)",
    )
    g.add_argument(
        "--recompute-stride",
        type=options.bounded_int(1, "target tokens per re-encoded pass"),
        default=None,
        help="with --recompute: target tokens per pass (default T // 4; 1 is exact and costs a pass per token)",
    )
    g.add_argument(
        "--control",
        choices=["shuffled"],
        default=None,
        help="contamination control: the baseline also reads a paragraph-shuffled copy of each window (one more "
        "forward pass per window); memorised text cannot be recited from it",
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "length": args.length, "windows": options.resolve_windows(args),
            "text": args.text, "train_len": args.train_len, "repeat": args.repeat}


def loss_references(args: argparse.Namespace, run: Any) -> dict[str, Any]:
    """{"reference": [RecomputeResult per window]} and/or {"control": Replicate} as asked."""
    from lminf_diag.cli.pipeline import CONTROL, session_of, trace_key
    from lminf_diag.cli.progress import Progress
    from lminf_diag.runs import trace_step

    out: dict[str, Any] = {}
    k = options.resolve_windows(args)
    if getattr(args, "recompute", False):
        from lminf_diag.evaluate.references import recompute_windows

        def load():
            session = session_of(args)
            return session.model, session.windows, int(session.info.train_len)

        out["reference"] = recompute_windows(
            load, k, stride=args.recompute_stride, run_dir=run, settings=_settings(args), steps=Progress(k),
        )
    if getattr(args, "control", None) == "shuffled":
        from lminf_diag.capture.windows import Replicate
        from lminf_diag.cli.pipeline import capture_trace
        from lminf_diag.evaluate.references import shuffled_ids

        stride = options.resolve_stride(args.stride, args.length)
        windows = []
        progress = None
        for w in range(k):
            key = trace_key(CONTROL, w)
            if run.has(trace_step(key)):
                trace = run.load_trace(key)
            else:
                session = session_of(args)
                progress = progress or Progress(k)
                where, ids = session.windows[w]
                shuffled = shuffled_ids(session.tokenizer, ids, args.seed + w)
                with progress.step(f"window {w + 1}/{k} ({where.text}), baseline on shuffled paragraphs") as step:
                    trace = capture_trace(_Shuffled(session, w, shuffled), args, "baseline", stride, w)
                trace.meta.extra["control"] = "paragraph-shuffled copy of the window"
                run.save_trace(key, trace, seconds=step.seconds)
            windows.append({"baseline": trace})
        out["control"] = Replicate(windows)
    return out


class _Shuffled:
    """The session with window `w`'s tokens replaced by the shuffled ones (for `capture_trace`)."""

    def __init__(self, session: Any, w: int, ids: Any):
        self.model, self.tokenizer, self.info = session.model, session.tokenizer, session.info
        self.windows = list(session.windows)
        where = session.windows[w][0]
        self.windows[w] = (where, ids)


__all__ = ["add_reference_options", "loss_references"]
