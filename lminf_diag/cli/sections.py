"""What `diag report` and `diag methods` share: the analysis, the extra sections, one run.

The extra sections (passkey retrieval, loss over documents, decoding latency and KV cache) run
for the baseline and every method with the same settings; their cells are kept in the run folder
(``passkey/``, ``ppl/``, ``decode/``), so a repeated command resumes. `run_with_extras` runs the
capture, the analyzers, the references and the sections into one run folder and report; a
`summarize` callback may put a summary result (the methods table) first.

Example:
    >>> from lminf_diag.cli.sections import extras_requested
    >>> import argparse
    >>> extras_requested(argparse.Namespace(passkey_lengths=[4096], docs=None, decode_contexts=None))
    ['--passkey-lengths']
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from lminf_diag.cli import options

DEFAULT_DECODE_STEPS = 16
EXTRA_OPTIONS = ("--passkey-lengths", "--docs", "--decode-contexts")


def analyze(traces: Any, train_len: int | None = None, **references: Any) -> dict[str, Any]:
    """All analyzers the traces (a Replicate, or one window) have data for; `references` go to the
    loss analyzer (reference=, control=)."""
    from lminf_diag.analyze import analyze_all

    return analyze_all(traces, train_len=train_len, **references)


def add_extra_options(p: argparse.ArgumentParser) -> None:
    """--passkey-lengths/-depths/-top-k..., --docs/--baseline-max-length, --decode-contexts/--decode-steps."""
    from lminf_diag.cli.passkey_options import (
        add_top_k_options,
        add_trials_option,
        parse_depths,
        parse_lengths,
    )

    g = p.add_argument_group(
        "extra sections (off by default: each loads the model again and takes time; resumable in --out)"
    )
    g.add_argument(
        "--passkey-lengths",
        type=parse_lengths,
        default=None,
        metavar="N,N",
        help="add passkey retrieval at these prompt lengths in tokens, comma-separated (e.g. 4096,8192); "
        "--passkey-trials prompts per length (default 50) at seeded random depths, greedy answers, as `diag passkey`",
    )
    g.add_argument(
        "--passkey-depths",
        type=parse_depths,
        default=None,
        metavar="F,F",
        help="with --passkey-lengths: fixed needle depths as fractions of the filler text (default: a seeded "
        "random depth per prompt, uniform in [0, 1])",
    )
    add_top_k_options(g, "--passkey-")  # as `diag passkey --top-k ...`, for the passkey section only
    add_trials_option(g, "--passkey-", dest="passkey_trials")
    g.add_argument(
        "--docs",
        action=options.CommaList,
        type=options.comma_list(str, "documents"),
        metavar="DOC[,DOC]",
        default=None,
        help="add the loss over documents at --length tokens: comma-separated bundled book names (`diag "
        "books`), text files or folders "
        "(every .txt inside), as `diag ppl`; documents shorter than --length are skipped",
    )
    g.add_argument(
        "--baseline-max-length",
        type=options.bounded_int(2, "tokens of each document the unpatched model reads"),
        default=None,
        help="with --docs: run the baseline on the first N tokens of each document only",
    )
    g.add_argument(
        "--decode-contexts",
        type=parse_lengths,
        default=None,
        metavar="N,N",
        help="add decoding latency and KV-cache size after prompts of these lengths in tokens (from --text, "
        "comma-separated, e.g. 4096,8192), baseline and patched",
    )
    g.add_argument(
        "--decode-steps",
        type=options.bounded_int(1, "tokens decoded per context"),
        default=DEFAULT_DECODE_STEPS,
        help=f"with --decode-contexts: tokens decoded (and timed) per context (default {DEFAULT_DECODE_STEPS})",
    )


def extras_requested(args: argparse.Namespace) -> list[str]:
    """The extra-section options given on the command line (empty: the plain report)."""
    given = {
        "--passkey-lengths": getattr(args, "passkey_lengths", None),
        "--docs": getattr(args, "docs", None),
        "--decode-contexts": getattr(args, "decode_contexts", None),
    }
    return [name for name, value in given.items() if value]


def passkey_section(args: argparse.Namespace, model: Any, tok: Any, info: Any, run: Any) -> Any:
    """Passkey retrieval at --passkey-lengths x --passkey-depths, baseline and every mode; resumable."""
    from lminf_diag.cli.evaluation import method_settings
    from lminf_diag.cli.passkey_tables import accuracy_table, lambda_table
    from lminf_diag.cli.progress import Progress
    from lminf_diag.evaluate import run_passkey

    result = run_passkey(
        model,
        tok,
        args.passkey_lengths,
        args.passkey_depths,
        seed=args.seed,
        trials=args.passkey_trials,
        modes=options.labels(args),
        train_len=info.train_len,
        run_dir=run,
        progress=Progress,
        settings=method_settings(args),
    )
    stream = options.human(args)
    print(f"\npasskey accuracy (training length T = {info.train_len} tokens)", file=stream)
    print(accuracy_table(result), file=stream)
    print(lambda_table(result), file=stream)
    return result


def documents_section(args: argparse.Namespace, model: Any, tok: Any, info: Any, run: Any) -> Any:
    """Loss over --docs at --length tokens, baseline and every mode; None when no document is long enough."""
    from lminf_diag.cli.evaluation import method_settings
    from lminf_diag.cli.progress import Progress
    from lminf_diag.evaluate import perplexity_over_documents

    result = perplexity_over_documents(
        model,
        tok,
        args.docs,
        args.length,
        modes=options.labels(args),
        baseline_max_length=args.baseline_max_length,
        train_len=info.train_len,
        run_dir=run,
        progress=Progress,
        settings=method_settings(args),  # the documents take n_global, n_local, limit
    )
    stream = options.human(args)
    for note in result.notes:
        print(note, file=stream)
    if not result.documents:
        print(
            f"warning: no document has {args.length} tokens; the documents section is left out "
            "(pass longer documents or a smaller --length).",
            file=sys.stderr,
        )
        return None
    return result


def decoding_section(args: argparse.Namespace, model: Any, tok: Any, info: Any, run: Any) -> Any:
    """Decode --decode-steps tokens after --decode-contexts tokens of --text, baseline and every mode.

    Each (label, context) is kept in the run folder under ``decode/`` with the settings it was
    measured with (model, text, steps, dtype, device, patch); a rerun reuses it.
    """
    from lminf_diag.cli.progress import Progress
    from lminf_diag.cli.settings import settings_of
    from lminf_diag.data import load_text, token_window
    from lminf_diag.evaluate.cells import CellStore, Steps
    from lminf_diag.evaluate.decoding import DecodingResult, DecodingRun, decode
    from lminf_diag.models.loader import model_name

    s = settings_of(args)
    labels = list(s.labels)
    text, _ = load_text(s.text)
    common = {
        "model": model_name(model),
        "text": s.text,
        "repeat": s.repeat,
        "steps": args.decode_steps,
        "dtype": s.dtype,
        "device": s.device or "cpu",
    }
    runs: dict[str, list[Any]] = {lab: [] for lab in labels}
    steps = Steps(Progress, len(labels) * len(args.decode_contexts))
    for n in args.decode_contexts:
        ids = None
        for lab in labels:
            patch = None if lab == "baseline" else s.patch(lab, info.train_len)
            store = CellStore(run, "decode", {**common, "patch": patch})
            key, name = f"{lab}_{n}", f"{lab}: decode {args.decode_steps} tokens after {n}"
            cell = store.load(key)
            if cell is not None:
                runs[lab].append(DecodingRun.from_cell(lab, cell))
                steps.skip(name)
                continue
            if ids is None:
                ids = token_window(tok, text, n, repeat=s.repeat)
            start = time.perf_counter()
            with steps.step(name):
                done = decode(model, ids, args.decode_steps, patch=patch, label=lab)
            store.save(key, done.to_cell(), seconds=time.perf_counter() - start)
            runs[lab].append(done)
    return DecodingResult(labels=labels, train_len=info.train_len, runs=runs)


def extra_sections(args: argparse.Namespace, run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """({section: result}, {metadata}) of the extra sections asked for; loads the model once."""
    from lminf_diag.cli.loading import load

    model, tok, info = load(args)
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    if args.passkey_lengths:
        results["passkey"] = passkey_section(args, model, tok, info, run)
        meta["passkey lengths"] = args.passkey_lengths
        meta["passkey depths"] = args.passkey_depths or "random (seeded, uniform in [0, 1])"
        meta["passkey trials"] = args.passkey_trials
        if args.top_k:
            meta["passkey top-k"] = (f"{args.top_k} middle tokens from layer {args.top_k_from_layer}, at distance "
                                     f"{args.top_k_distance if args.top_k_distance is not None else 'n_local // 2'}")
    if args.docs:
        docs = documents_section(args, model, tok, info, run)
        if docs is not None:
            results["documents"] = docs
        meta["documents"] = docs.documents if docs is not None else []
        if docs is not None and docs.notes:
            meta["documents skipped"] = docs.notes
        meta["baseline_max_length"] = args.baseline_max_length
    if args.decode_contexts:
        results["decoding"] = decoding_section(args, model, tok, info, run)
        meta["decode contexts"] = args.decode_contexts
        meta["decode steps"] = args.decode_steps
    return results, meta


def run_with_extras(args: argparse.Namespace, verb: str = "report",
                    summarize: Callable[[dict[str, Any]], tuple[str, Any]] | None = None) -> int:
    """`pipeline.run_analysis` plus the extra sections, in the same run folder; `summarize(results)`
    returns (section, result) to put first (the methods table)."""
    from lminf_diag.cli.pipeline import open_run, run_meta, write_outputs
    from lminf_diag.cli.progress import timed
    from lminf_diag.evaluate import resolve_documents

    t0 = time.perf_counter()
    if args.docs:
        resolve_documents(args.docs)  # a wrong name fails before anything runs
    s, out, run, traces, refs = open_run(args, verb)
    with timed("analysis", sys.stderr):
        results = analyze(traces, train_len=s.train_len, **refs)
    extra, extra_meta = extra_sections(args, run)
    results.update(extra)
    if summarize is not None:
        section, summary = summarize(results)
        results = {section: summary, **results}
    run.start()
    from lminf_diag.cli.pipeline import reference_meta

    meta = run_meta(run, traces, command=verb, device=s.device or "cpu", **extra_meta, **reference_meta(refs))
    if s.train_len:  # the traces record the model's own training length
        meta["train_len"] = s.train_len
    meta["seconds for this command"] = round(time.perf_counter() - t0, 2)
    return write_outputs(verb, out, results, meta, args)


__all__ = ["DEFAULT_DECODE_STEPS", "EXTRA_OPTIONS", "add_extra_options", "analyze", "extra_sections",
           "extras_requested", "run_with_extras"]
