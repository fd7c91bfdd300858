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
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.sections import (  # noqa: F401  (EXTRA_OPTIONS, extras_requested: importable here too)
    EXTRA_OPTIONS,
    add_extra_options,
    analyze,
    extras_requested,
    run_with_extras,
)

VERB = "report"


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
