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
from lminf_diag.cli.settings import RunSettings, settings_of
from lminf_diag.devices import input_device
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.runs import RUN_FILE, RunDir, trace_step
from lminf_diag.util.atomic import atomic_write_text
from lminf_diag.util.jsonsafe import to_json_safe

Analyzer = Callable[..., dict]  # (Replicate, **loss references) -> {section: AnalysisResult}


@dataclass
class Session:
    """A loaded model and the token windows it reads (window 0 first)."""

    model: Any
    tokenizer: Any
    info: Any  # ModelInfo (training length already overridden by --train-len)
    windows: list  # [(Window, ids (1, N) long tensor)], K independent windows

    @property
    def input_ids(self) -> Any:
        """The first window's tokens (1, N)."""
        return self.windows[0][1]

    @property
    def text_source(self) -> str:
        return self.windows[0][0].text


def load_session(args: argparse.Namespace) -> Session:
    """Read the texts, load the model and cut K windows (text errors come before the model loads)."""
    from lminf_diag.capture.windows import plan_windows
    from lminf_diag.data import load_text, window_sources
    from lminf_diag.models import load_model, model_info

    texts = window_sources(str(args.text))
    load_text(texts[0])
    options.seed_everything(args.seed)
    model, tok = load_model(args.model, **options.load_kwargs(args))
    info = model_info(model, train_len=args.train_len)
    if info.train_len is None and getattr(args, "n_local", None) is None:
        raise InvalidArgumentError(
            f"The training length of {args.model} is unknown (no max_position_embeddings or similar in its "
            "config); pass --train-len N, or --n-local N for the patch window."
        )
    k = options.resolve_windows(args)
    windows = plan_windows(tok, texts, args.length, k, repeat=args.repeat)
    return Session(model, tok, info, windows)


def warn_short_window(length: int, train_len: int | None) -> None:
    """Say on stderr when the window does not go past the training length (nothing to diagnose)."""
    from lminf_diag.cli.progress import warn_short_window as warn

    warn(length, train_len)


def patch_settings(args: argparse.Namespace | RunSettings, mode: str, train_len: int | None) -> dict[str, Any]:
    """The `lm_infinite` keyword arguments of one mode (n_local defaults to the training length)."""
    return settings_of(args).patch(mode, train_len)


def method_of(args: argparse.Namespace | RunSettings, label: str, model: Any, train_len: int | None,
              n_tokens: int) -> Any:
    """The `MethodSpec` of a --method label (None for the baseline and --mode labels): the method's
    defaults, with --n-global/--n-local/--limit where it has them and --rope-factor (default: the
    window's length / training length) where it scales RoPE."""
    s = settings_of(args)
    if label == "baseline" or label not in s.methods or label in s.modes:
        return None
    from lminf_diag.attention.method_spec import split_name
    from lminf_diag.patch.methods import resolve_method

    attn, rope = split_name(label)
    settings: dict[str, Any] = {}
    if attn:
        settings.update(n_global=s.n_global, n_local=s.n_local)
        if attn != "streaming":
            settings["limit"] = s.limit
    if rope:
        factor = s.rope_factor
        settings.update({"factor": factor} if factor is not None else {"target_len": n_tokens})
    return resolve_method(model, label, train_len=train_len, **settings)


def capture_trace(session: Session, args: argparse.Namespace | RunSettings, label: str, stride: int, window: int = 0,
                  prefix: Any = None, on_prefix: Any = None, progress: Any = None, checkpoint: Any = None):
    """One forward pass of `label` ("baseline" or a mode) over window `window`, recording everything
    the analyzers use. The baseline hands its KV cache of the first n_local tokens to `on_prefix`;
    a patched run given that `prefix` computes only the rows after it (`capture.prefix`).
    `progress(done, total, unit)`: per chunk or per layer (`run_trace`). `checkpoint`: the file a
    chunked capture checkpoints to and resumes from (`partial_file`)."""
    from lminf_diag.capture.compare import default_hidden_layers, run_trace

    s = settings_of(args)
    info, model = session.info, session.model
    where, ids = session.windows[window]
    ids = ids.to(input_device(model))
    spec = method_of(s, label, model, info.train_len, int(ids.shape[1]))
    patch = None if label == "baseline" or spec is not None else s.patch(label, info.train_len)
    share = (s.n_local or info.train_len or 0) if on_prefix is not None else 0
    trace = run_trace(model, ids, label=label, patch=patch, method=spec, layers=s.layers,
                      hidden_layers=default_hidden_layers(info.n_layers), stride=stride,
                      hidden_stride=stride, text_source=where.text, train_len=info.train_len,
                      prefix=prefix, keep_prefix=share, on_prefix=on_prefix, progress=progress,
                      stop=s.resolved_baseline_length if label == "baseline" else None, checkpoint=checkpoint)
    trace.meta.extra.update({"stride": stride, "seed": s.seed, "window": where.to_dict()})
    return trace


def partial_file(run: RunDir, key: str) -> Path:
    """Where a chunked capture of trace `key` keeps its checkpoint until the trace is saved (the run
    folder is started first: run.json names it, and --overwrite has cleared it already)."""
    run.start()
    return Path(run.path) / "partial" / f"{key}.pt"


def trace_key(label: str, window: int) -> str:
    """The run-folder name of a label's trace in a window: the label for window 0, else label@wK.

    >>> trace_key("lambda", 0), trace_key("lambda", 3)
    ('lambda', 'lambda@w3')
    """
    return label if window == 0 else f"{label}@w{window}"


CONTROL = "control"  # trace key of the baseline on a paragraph-shuffled copy of a window


def split_key(key: str) -> tuple[str, int]:
    """Inverse of `trace_key`.

    >>> split_key("lambda@w3"), split_key("baseline")
    (('lambda', 3), ('baseline', 0))
    """
    label, sep, w = key.rpartition("@w")
    return (label, int(w)) if sep and w.isdigit() else (key, 0)


def load_replicate(run: RunDir) -> Any:
    """The saved traces of a run folder as a `Replicate` (only windows where every label finished)."""
    from lminf_diag.capture.windows import Replicate

    grouped: dict[int, dict[str, Any]] = {}
    for key in run.trace_labels():
        label, w = split_key(key)
        if label == CONTROL:  # the shuffled-text control: see cli/references.py
            continue
        grouped.setdefault(w, {})[label] = key
    if not grouped:
        raise InvalidArgumentError(f"{run.path} holds no finished trace yet; finish it by repeating its command.")
    common = set.intersection(*(set(g) for g in grouped.values()))  # labels every window finished
    labels = [lab for lab in grouped[min(grouped)] if lab in common]
    complete = sorted(grouped)
    return Replicate([{lab: run.load_trace(grouped[w][lab]) for lab in labels} for w in complete])


def record_args(args: argparse.Namespace | RunSettings, stride: int) -> dict[str, Any]:
    """The settings that define a run's traces (compared when a run folder is reopened).

    The run labels are not among them: each trace is stored under its label and window, so a
    finished run folder takes another mode (an ablation) without --overwrite."""
    s = settings_of(args)
    return {
        "model": s.model,
        "text": s.text,
        "windows": s.windows,
        "length": s.length,
        "repeat": s.repeat,
        "n_global": s.n_global,
        "n_local": s.n_local,
        "limit": s.limit,
        "layers": "all" if s.layers is None else s.layers,
        "stride": stride,
        "dtype": s.dtype,
        "train_len": s.train_len,
        "seed": s.seed,
        **({"rope_factor": s.rope_factor} if s.rope_factor is not None else {}),
        **({"baseline_length": s.resolved_baseline_length} if s.resolved_baseline_length < s.length else {}),
    }


def session_of(args: argparse.Namespace) -> Session:
    """The model and windows of this command, loaded once (kept on `args` for later steps)."""
    session = getattr(args, "_session", None)
    if session is None:
        with timed("loading model and text", sys.stderr):
            session = load_session(args)
        args._session = session
    return session


def capture_all(args: argparse.Namespace, run: RunDir, out_stream: Any) -> Any:
    """Every label's trace in every window, captured now or loaded from the run folder, as a
    `Replicate`; prints the finished steps it skips."""
    from lminf_diag.capture.windows import Replicate

    s = settings_of(args)
    labels, k, stride = list(s.labels), s.windows, s.resolved_stride
    keys = [(w, lab, trace_key(lab, w)) for w in range(k) for lab in labels]
    done = {key for _, _, key in keys if run.has(trace_step(key))}
    if done:
        print(f"resuming {run.path}: skipped {len(done)} finished capture step(s)", file=out_stream)
    traces: dict = {}
    todo: dict[int, list[tuple[str, str]]] = {}
    for w, lab, key in keys:
        if key not in done:
            todo.setdefault(w, []).append((lab, key))
    if len(todo) > 1 and (getattr(args, "workers", 1) > 1 or getattr(args, "ray", None)):
        from lminf_diag.cli.window_units import capture_parallel

        traces = capture_parallel(args, run, todo)
    elif todo:
        session = session_of(args)
        n = session.input_ids.shape[1]
        warn_short_window(n, session.info.train_len)
        stop = s.resolved_baseline_length if "baseline" in labels else n
        if stop < n:
            print(f"the baseline reads the first {stop} of {n} tokens of each window (--baseline-length): a plain "
                  "pass costs O(n^2); the bounded runs read the whole window", file=sys.stderr)
        progress = Progress(len(keys))
        held: dict[int, Any] = {}  # window -> the baseline's shared prefix (patched runs start from it)
        for w, lab, key in keys:
            what = (f"window {w + 1}/{k} ({session.windows[w][0].text}), {lab}: forward over "
                    f"{stop if lab == 'baseline' else n} tokens")
            if key in done:
                progress.skip(what)
                continue
            for old in [x for x in held if x != w]:  # one window's cache in memory at a time
                del held[old]
            wanted = lab == "baseline" and len(labels) > 1
            with progress.step(what) as step:
                trace = capture_trace(session, args, lab, stride, w, prefix=held.get(w),
                                      on_prefix=(lambda p, w=w: held.__setitem__(w, p)) if wanted else None,
                                      progress=step.update, checkpoint=partial_file(run, key))
            run.save_trace(key, trace, seconds=step.seconds)
            partial_file(run, key).unlink(missing_ok=True)
            traces[key] = trace
    windows = [
        {lab: traces[key] if key in traces else run.load_trace(key) for ww, lab, key in keys if ww == w}
        for w in range(k)
    ]
    return Replicate(windows)


def run_meta(run: RunDir, traces: Any, **extra: Any) -> dict[str, Any]:
    """The metadata table of a report: what ran on which windows, settings, time per step, versions.

    `traces`: a `Replicate`, a Comparison or a {label: Trace} dict (one window)."""
    from lminf_diag.capture.windows import as_windows

    windows = as_windows(traces)
    first_window = windows[0]
    first = next(iter(first_window.values()), None)
    args = run.info.get("args", {})
    patch = next((t.meta.patch for t in first_window.values() if t.meta.patch), None) or {}
    seconds = run.seconds
    texts = [next(iter(w.values())).meta.text_source for w in windows]
    where = [next(iter(w.values())).meta.extra.get("window") for w in windows]
    meta: dict[str, Any] = {
        "model": args.get("model", first.meta.model if first else ""),
        "text": ", ".join(dict.fromkeys(texts)) if first else args.get("text"),
        "windows": len(windows),
        "window sources": [w if w else {"text": t} for w, t in zip(where, texts, strict=True)],
        "length": first.n_tokens if first else args.get("length"),
        "train_len": (first.meta.train_len or None) if first else None,
        "labels": list(first_window),
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
    stops = stopped_note(first_window)
    if stops:
        meta["notes"] = [stops]
    return meta


def stopped_note(window: Mapping[str, Any]) -> str | None:
    """The sentence saying where and why the baseline stops (`--baseline-length`), or None.

    >>> from lminf_diag.synthetic import make_comparison
    >>> cmp = make_comparison(n=256, train_len=64)
    >>> cmp.traces["baseline"].meta.extra["stopped_at"] = 128
    >>> print(stopped_note(cmp.traces))  # doctest: +NORMALIZE_WHITESPACE
    The baseline reads the first 128 of the 256 tokens of each window (--baseline-length): a plain
    pass attends every earlier key, so its cost grows with n^2. Its figures cover positions below 128;
    past that only the bounded runs (lambda) are measured.
    """
    base = window.get("baseline")
    stop = base.meta.extra.get("stopped_at") if base is not None else None
    if not stop:
        return None
    others = ", ".join(lab for lab in window if lab != "baseline") or "none here"
    return (f"The baseline reads the first {stop} of the {base.n_tokens} tokens of each window (--baseline-length): "
            f"a plain pass attends every earlier key, so its cost grows with n^2. Its figures cover positions "
            f"below {stop}; past that only the bounded runs ({others}) are measured.")


def write_outputs(
    verb: str, out: Path, results: Mapping[str, Any], meta: dict[str, Any], args: argparse.Namespace,
    title: str | None = None,
) -> int:
    """The report `<out>/<verb>.html` (page `title`, default the report's own), `<out>/summary.json`
    (`results_payload`, merged with other verbs' sections of the same folder), the verdict and
    key-figure tables, the findings, and this verb's JSON on stdout with --json."""
    from lminf_diag.report import build_report, format_table, format_verdicts, key_table, verdict_list
    from lminf_diag.report.page import plotlyjs
    from lminf_diag.report.schema import merge_summary, results_payload

    stream = options.human(args)
    with timed(f"writing {verb}.html", sys.stderr):
        with plotlyjs(getattr(args, "plotlyjs", "inline")):
            html = build_report(results, meta, out / f"{verb}.html", title=title)
    payload = results_payload(verb, results, meta)
    payload["report"] = html.name
    summary_path = out / "summary.json"
    summary = merge_summary(summary_path, payload, verb, html.name)
    atomic_write_text(summary_path, json.dumps(to_json_safe(summary), indent=2) + "\n")
    print("\n" + format_verdicts(verdict_list(results)), file=stream)
    print("\n" + format_table(key_table(results)), file=stream)
    print("\n" + "\n".join(f"- {line}" for line in payload["findings"]), file=stream)
    print(f"\nreport: {html}\nsummary: {summary_path}", file=stream)
    if args.json:
        print(json.dumps(to_json_safe({**payload, "out": str(out), "report": str(html)}), indent=2))
    return 0


def reference_meta(refs: Mapping[str, Any]) -> dict[str, Any]:
    """Run-metadata lines for the loss references (what the re-computation cost)."""
    meta: dict[str, Any] = {}
    if refs.get("reference"):
        meta["re-computation reference"] = [r.cost_text() for r in refs["reference"]]
    if refs.get("control") is not None:
        meta["contamination control"] = "the baseline on a paragraph-shuffled copy of each window"
    return meta


def open_run(args: argparse.Namespace, verb: str) -> tuple[Any, Path, RunDir, Any, dict]:
    """What every analysis run starts with: (settings, out, run folder, traces of every window
    captured or resumed, loss references asked for by --recompute / --control)."""
    s = settings_of(args)  # built once: every step reads the same settings
    record = record_args(s, s.resolved_stride)
    out = Path(args.out) if args.out else options.default_out(verb, s.model, s.length, record, record["windows"])
    run = RunDir(out, record, overwrite=args.overwrite)
    args.resume_hint = f"finished steps are kept in {out} ({RUN_FILE})"
    traces = capture_all(args, run, options.human(args))
    refs = {}
    if getattr(args, "recompute", False) or getattr(args, "control", None):
        from lminf_diag.cli.references import loss_references

        refs = loss_references(args, run)
    return s, out, run, traces, refs


def run_analysis(args: argparse.Namespace, verb: str, analyze: Analyzer) -> int:
    """The whole verb: run folder, captures over every window (resumable), analysis, report, summary."""
    t0 = time.perf_counter()
    s, out, run, traces, refs = open_run(args, verb)
    with timed("analysis", sys.stderr):
        results = analyze(traces, **refs)
    run.start()
    meta = run_meta(run, traces, command=verb, device=s.device or "cpu")
    meta.update(reference_meta(refs))
    meta["seconds for this command"] = round(time.perf_counter() - t0, 2)
    return write_outputs(verb, out, results, meta, args)
