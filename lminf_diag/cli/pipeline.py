"""The flow the analysis verbs share: open the run folder, capture (resuming), analyse, write.

``diag entropy|logits|pca|report`` all call `run_analysis` with their analyzer. Every verb
captures the same things (attention statistics of the chosen layers, logit profile rows,
hidden states of a few layers, per-token loss), one forward pass per label, so run folders
written by one verb can be resumed or re-analysed by another with the same settings.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["entropy", "--length", "4096", "--out", "runs/alice-4k"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import Progress, timed
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.runs import RUN_FILE, RunDir, atomic_write_text, to_json_safe, trace_step

Analyzer = Callable[[dict], dict]  # {label: Trace} -> {section: AnalysisResult}


@dataclass
class Session:
    """A loaded model and the token window it reads."""

    model: Any
    tokenizer: Any
    info: Any  # ModelInfo (training length already overridden by --train-len)
    input_ids: Any  # (1, N) long tensor
    text_source: str


def load_session(args: argparse.Namespace) -> Session:
    """Read the text, load the model and cut the token window (text errors come before the model loads)."""
    from lminf_diag.data import load_text, token_window
    from lminf_diag.models import load_model, model_info

    text, source = load_text(args.text)
    options.seed_everything(args.seed)
    model, tok = load_model(
        args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    info = model_info(model, train_len=args.train_len)
    if info.train_len is None and getattr(args, "n_local", None) is None:
        raise InvalidArgumentError(
            f"The training length of {args.model} is unknown (no max_position_embeddings or similar in its "
            "config); pass --train-len N, or --n-local N for the patch window."
        )
    ids = token_window(tok, text, args.length, repeat=args.repeat)
    return Session(model, tok, info, ids, source)


def warn_short_window(length: int, train_len: int | None) -> None:
    """Say on stderr when the window does not go past the training length (nothing to diagnose)."""
    if train_len and length <= train_len:
        print(
            f"warning: the window ({length} tokens) is within the training length ({train_len}); the "
            f"breakdown only shows past it: use --length above {train_len} (--repeat for a short text).",
            file=sys.stderr,
        )


def patch_settings(args: argparse.Namespace, mode: str, train_len: int | None) -> dict[str, Any]:
    """The `lm_infinite` keyword arguments of one mode (n_local defaults to the training length)."""
    return {
        "n_global": args.n_global,
        "n_local": args.n_local or train_len,
        "limit": args.limit,
        "mode": mode,
    }


def capture_trace(session: Session, args: argparse.Namespace, label: str, stride: int):
    """One forward pass of `label` ("baseline" or a mode) recording everything the analyzers use."""
    from lminf_diag.capture.compare import default_hidden_layers, run_trace

    info, model = session.info, session.model
    ids = session.input_ids.to(next(model.parameters()).device)
    patch = None if label == "baseline" else patch_settings(args, label, info.train_len)
    trace = run_trace(model, ids, label=label, patch=patch, layers=args.layers,
                      hidden_layers=default_hidden_layers(info.n_layers), stride=stride,
                      hidden_stride=stride, text_source=session.text_source, train_len=info.train_len)
    trace.meta.extra.update({"stride": stride, "seed": args.seed})
    return trace


def record_args(args: argparse.Namespace, stride: int) -> dict[str, Any]:
    """The settings that define a run's traces (compared when a run folder is reopened)."""
    return {
        "model": args.model,
        "text": args.text,
        "length": args.length,
        "repeat": args.repeat,
        "baseline": "baseline" in options.labels(args),
        "modes": [] if args.baseline_only else options.modes(args),
        "n_global": args.n_global,
        "n_local": args.n_local,
        "limit": args.limit,
        "layers": "all" if args.layers is None else args.layers,
        "stride": stride,
        "dtype": args.dtype,
        "train_len": args.train_len,
        "seed": args.seed,
    }


def capture_all(args: argparse.Namespace, run: RunDir, out_stream: Any) -> dict:
    """Every label's trace, captured now or loaded from the run folder; prints skipped steps."""
    labels = options.labels(args)
    stride = options.resolve_stride(args.stride, args.length)
    done = [lab for lab in labels if run.has(trace_step(lab))]
    if done:
        steps = ", ".join(trace_step(lab) for lab in done)
        print(f"resuming {run.path}: skipped finished steps {steps}", file=out_stream)
    traces: dict = {}
    if len(done) < len(labels):
        with timed("loading model and text", sys.stderr):
            session = load_session(args)
        n = session.input_ids.shape[1]
        warn_short_window(n, session.info.train_len)
        progress = Progress(len(labels))
        for lab in labels:
            if lab in done:
                progress.skip(f"{lab}: forward over {n} tokens")
                continue
            with progress.step(f"{lab}: forward over {n} tokens") as step:
                trace = capture_trace(session, args, lab, stride)
            run.save_trace(lab, trace, seconds=step.seconds)
            traces[lab] = trace
    return {lab: traces[lab] if lab in traces else run.load_trace(lab) for lab in labels}


def run_meta(run: RunDir, traces: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The metadata table of a report: what ran on which text, settings, time per step, versions."""
    first = next(iter(traces.values()), None)
    args = run.info.get("args", {})
    patch = next((t.meta.patch for t in traces.values() if t.meta.patch), None) or {}
    seconds = run.seconds
    meta: dict[str, Any] = {
        "model": args.get("model", first.meta.model if first else ""),
        "text": first.meta.text_source if first else args.get("text"),
        "length": first.n_tokens if first else args.get("length"),
        "train_len": (first.meta.train_len or None) if first else None,
        "labels": list(traces),
        "n_global": patch.get("n_global", args.get("n_global")),
        "n_local": patch.get("n_local", args.get("n_local")),
        "limit": patch.get("limit", args.get("limit")),
        "stride": args.get("stride"),
        **extra,
        "settings": args,
        "run folder": str(run.path),
        "started": run.info.get("created"),
        "git": run.info.get("git") or "-",
        "seconds per step": seconds,
        "capture seconds in all": round(sum(seconds.values()), 2),
        "versions": run.info.get("versions", {}),
    }
    return meta


def write_outputs(
    verb: str, out: Path, results: Mapping[str, Any], meta: dict[str, Any], args: argparse.Namespace,
    title: str | None = None,
) -> int:
    """The report `<out>/<verb>.html` (page `title`, default the report's own), the merged
    `<out>/summary.json`, the summary table, --json."""
    from lminf_diag.report import build_report, format_table, key_table

    stream = options.human(args)
    with timed(f"writing {verb}.html", sys.stderr):
        html = build_report(results, meta, out / f"{verb}.html", title=title)
    table = key_table(results)
    summary_path = out / "summary.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    summary.setdefault("sections", {}).update({k: r.summary() for k, r in results.items()})
    summary.setdefault("key_figures", {})[verb] = table.to_dict()
    summary.setdefault("reports", {})[verb] = html.name
    summary["meta"] = meta
    atomic_write_text(summary_path, json.dumps(to_json_safe(summary), indent=2) + "\n")
    print("\n" + format_table(table), file=stream)
    print(f"\nreport: {html}\nsummary: {summary_path}", file=stream)
    if args.json:
        payload = {"verb": verb, "out": str(out), "report": str(html), "summary": summary["sections"]}
        payload["key_figures"] = table.to_dict()
        print(json.dumps(to_json_safe(payload), indent=2))
    return 0


def run_analysis(args: argparse.Namespace, verb: str, analyze: Analyzer) -> int:
    """The whole verb: run folder, captures (resumable), analysis, report, summary."""
    t0 = time.perf_counter()
    stride = options.resolve_stride(args.stride, args.length)
    out = Path(args.out) if args.out else options.default_out(verb, args.model, args.length)
    run = RunDir(out, record_args(args, stride), overwrite=args.overwrite)
    args.resume_hint = f"finished steps are kept in {out} ({RUN_FILE})"
    traces = capture_all(args, run, options.human(args))
    with timed("analysis", sys.stderr):
        results = analyze(traces)
    run.start()
    meta = run_meta(run, traces, command=verb, device=args.device or "cpu")
    meta["seconds for this command"] = round(time.perf_counter() - t0, 2)
    return write_outputs(verb, out, results, meta, args)
