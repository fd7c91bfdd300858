"""``diag report``: every analysis in one HTML page, from a new run or from saved run folders.

Without folders: one capture pass per run (baseline + each --mode), then all analyzers
(`lminf_diag.analyze.analyze_all`) and ``<out>/report.html``. With folders
(``diag report runs/a runs/b``): the saved traces are analysed again, no model is loaded.

Optional extra sections, off by default (each loads the model once more and costs time):
``--passkey-lengths`` (passkey retrieval, `lminf_diag.evaluate.run_passkey`), ``--docs`` (loss
over documents at --length, `lminf_diag.evaluate.perplexity_over_documents`) and
``--decode-contexts`` (decoding latency and KV-cache size, `lminf_diag.evaluate.decoding.decode`),
each run for the baseline and every --mode with the same patch settings. Their finished cells
are kept in the same run folder (``passkey/``, ``ppl/``, ``decode/``, steps in run.json), so
repeating the command resumes, and adding a section to a finished report computes only it.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["report", "--length", "16384"])  # doctest: +SKIP
    0
    >>> main(["report", "--length", "16384", "--passkey-lengths", "4096,16384",
    ...       "--docs", "carroll-alice", "--decode-contexts", "4096,16384"])  # doctest: +SKIP
    0
    >>> main(["report", "runs/report-smollm2-135m-16384"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options

VERB = "report"
DEFAULT_DECODE_STEPS = 16
EXTRA_OPTIONS = ("--passkey-lengths", "--docs", "--decode-contexts")


def analyze(traces: Any, train_len: int | None = None, **references: Any) -> dict[str, Any]:
    """All analyzers the traces (a Replicate, or one window) have data for; `references` go to the
    loss analyzer (reference=, control=)."""
    from lminf_diag.analyze import analyze_all

    return analyze_all(traces, train_len=train_len, **references)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "all analyses in one HTML report (new run or saved run folders)",
        "Without RUN folders: capture one forward pass per run (baseline + each --mode), run every\n"
        "analyzer (logits, entropy, positions, loss) and write <out>/report.html and summary.json.\n"
        "With RUN folders: rebuild the report from their saved traces, without loading a model\n"
        "(the model, text and patch options are then ignored; --train-len still applies).\n"
        "Extra sections, off by default (they take time): --passkey-lengths (passkey retrieval),\n"
        "--docs (loss over documents at --length), --decode-contexts (decoding speed and KV-cache\n"
        "size), each for the baseline and every --mode; finished cells are kept in the run folder.",
        [
            "diag report                                     # smollm2-135m, 4 windows x 12288 tokens, lambda",
            "diag report --mode lambda,cap_only --recompute --control shuffled   # + ablation, references",
            "diag report --train-len 1024 --length 2048      # pretend-T null: factors 1-2 must not read present",
            "diag report runs/report-smollm2-135m-12288-w4-<hash>   # rebuild from a saved run",
            "diag report runs/a runs/b --out runs/a-vs-b     # several runs in one page",
            "diag report --passkey-lengths 4096,8192,16384 --passkey-depths 0,0.5,1   # + passkey retrieval",
            "diag report --docs carroll-alice,bryant-stories --baseline-max-length 12288  # + loss over documents",
            "diag report --decode-contexts 4096,8192 --decode-steps 16   # + decoding latency and KV cache",
        ],
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="saved run folders to report on (no new capture)")
    options.add_analysis_options(p)
    from lminf_diag.cli.references import add_reference_options

    add_reference_options(p)
    add_extra_options(p)
    return p


def add_extra_options(p: argparse.ArgumentParser) -> None:
    """--passkey-lengths/-depths/-top-k..., --docs/--baseline-max-length, --decode-contexts/--decode-steps."""
    from lminf_diag.cli.passkey import add_top_k_options, parse_depths, parse_lengths

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
    from lminf_diag.cli.passkey import add_trials_option

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


def _out_for(args: argparse.Namespace, folders: list[Path]) -> Path:
    if args.out:
        return Path(args.out)
    if len(folders) == 1:
        return folders[0]
    names = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", f.resolve().name) for f in folders)
    return Path("runs") / f"report-{names}"[:100]


def from_folders(args: argparse.Namespace) -> int:
    """Rebuild the report from saved run folders (labels prefixed by folder name when they clash;
    windows are paired by index, up to the smallest number of windows among the folders)."""
    from lminf_diag.capture.windows import Replicate
    from lminf_diag.cli.pipeline import load_replicate, run_meta, write_outputs
    from lminf_diag.cli.progress import timed
    from lminf_diag.runs import RunDir

    folders = [Path(p) for p in args.runs]
    runs = [RunDir.open_existing(f) for f in folders]
    reps = [load_replicate(run) for run in runs]
    counts: dict[str, int] = {}
    for rep in reps:
        for lab in rep.labels:
            counts[lab] = counts.get(lab, 0) + 1
    names: list[dict[str, str]] = []
    used: set[str] = set()
    for run, rep in zip(runs, reps, strict=True):
        mapping = {}
        for lab in rep.labels:
            name = base = f"{run.path.resolve().name}:{lab}" if counts[lab] > 1 else lab
            i = 1
            while name in used:  # two folders of the same name
                i += 1
                name = f"{base}#{i}"
            used.add(name)
            mapping[lab] = name
        names.append(mapping)
    k = min(len(rep) for rep in reps)
    windows = []
    for w in range(k):
        merged: dict = {}
        for rep, mapping in zip(reps, names, strict=True):
            for lab, trace in rep[w].traces.items():
                trace.meta.label = mapping[lab]
                merged[mapping[lab]] = trace
        windows.append(merged)
    merged_rep = Replicate(windows)
    with timed("analysis", sys.stderr):
        results = analyze(merged_rep, train_len=args.train_len)
    out = _out_for(args, folders)
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(runs[0], merged_rep, command="report (from saved run)")
    if len(runs) > 1:
        meta["runs"] = [str(f) for f in folders]
    return write_outputs(VERB, out, results, meta, args)


def passkey_section(args: argparse.Namespace, model: Any, tok: Any, info: Any, run: Any) -> Any:
    """Passkey retrieval at --passkey-lengths x --passkey-depths, baseline and every mode; resumable."""
    from lminf_diag.cli.passkey import accuracy_table, lambda_table, top_k_args
    from lminf_diag.cli.ppl import patch_args
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
        **patch_args(args),
        **top_k_args(args),
    )
    stream = options.human(args)
    print(f"\npasskey accuracy (training length T = {info.train_len} tokens)", file=stream)
    print(accuracy_table(result), file=stream)
    print(lambda_table(result), file=stream)
    return result


def documents_section(args: argparse.Namespace, model: Any, tok: Any, info: Any, run: Any) -> Any:
    """Loss over --docs at --length tokens, baseline and every mode; None when no document is long enough."""
    from lminf_diag.cli.ppl import patch_args
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
        **patch_args(args),
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
    from lminf_diag.cli.pipeline import patch_settings
    from lminf_diag.cli.progress import Progress
    from lminf_diag.data import load_text, token_window
    from lminf_diag.evaluate.cells import CellStore, Steps
    from lminf_diag.evaluate.decoding import DecodingResult, DecodingRun, decode
    from lminf_diag.models.loader import model_name

    labels = options.labels(args)
    text, _ = load_text(args.text)
    common = {
        "model": model_name(model),
        "text": args.text,
        "repeat": args.repeat,
        "steps": args.decode_steps,
        "dtype": args.dtype,
        "device": args.device or "cpu",
    }
    runs: dict[str, list[Any]] = {lab: [] for lab in labels}
    steps = Steps(Progress, len(labels) * len(args.decode_contexts))
    for n in args.decode_contexts:
        ids = None
        for lab in labels:
            patch = None if lab == "baseline" else patch_settings(args, lab, info.train_len)
            store = CellStore(run, "decode", {**common, "patch": patch})
            key, name = f"{lab}_{n}", f"{lab}: decode {args.decode_steps} tokens after {n}"
            cell = store.load(key)
            if cell is not None:
                runs[lab].append(DecodingRun.from_cell(lab, cell))
                steps.skip(name)
                continue
            if ids is None:
                ids = token_window(tok, text, n, repeat=args.repeat)
            start = time.perf_counter()
            with steps.step(name):
                done = decode(model, ids, args.decode_steps, patch=patch, label=lab)
            store.save(key, done.to_cell(), seconds=time.perf_counter() - start)
            runs[lab].append(done)
    return DecodingResult(labels=labels, train_len=info.train_len, runs=runs)


def extra_sections(args: argparse.Namespace, run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """({section: result}, {metadata}) of the extra sections asked for; loads the model once."""
    from lminf_diag.cli.ppl import load

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


def run_with_extras(args: argparse.Namespace) -> int:
    """`pipeline.run_analysis` plus the extra sections, in the same run folder."""
    from lminf_diag.cli.pipeline import capture_all, record_args, run_meta, write_outputs
    from lminf_diag.cli.progress import timed
    from lminf_diag.evaluate import resolve_documents
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    if args.docs:
        resolve_documents(args.docs)  # a wrong name fails before anything runs
    stride = options.resolve_stride(args.stride, args.length)
    record = record_args(args, stride)
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, args.length, record, record["windows"])
    run = RunDir(out, record, overwrite=args.overwrite)
    args.resume_hint = f"finished steps are kept in {out} ({RUN_FILE})"
    traces = capture_all(args, run, options.human(args))
    refs = {}
    if args.recompute or args.control:
        from lminf_diag.cli.references import loss_references

        refs = loss_references(args, run)
    with timed("analysis", sys.stderr):
        results = analyze(traces, train_len=args.train_len, **refs)
    extra, extra_meta = extra_sections(args, run)
    results.update(extra)
    run.start()
    from lminf_diag.cli.pipeline import reference_meta

    meta = run_meta(run, traces, command=VERB, device=args.device or "cpu", **extra_meta, **reference_meta(refs))
    if args.train_len:  # the traces record the model's own training length
        meta["train_len"] = args.train_len
    meta["seconds for this command"] = round(time.perf_counter() - t0, 2)
    return write_outputs(VERB, out, results, meta, args)


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    extras = extras_requested(args)
    if args.runs:
        if extras:
            from lminf_diag.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"{', '.join(extras)} run the model, so they cannot be used with saved RUN folders; repeat "
                "the run's own command with them (it resumes: only the new sections are computed)."
            )
        return from_folders(args)
    if extras:
        return run_with_extras(args)
    from lminf_diag.cli.pipeline import run_analysis

    return run_analysis(args, VERB, lambda traces, **refs: analyze(traces, train_len=args.train_len, **refs))
