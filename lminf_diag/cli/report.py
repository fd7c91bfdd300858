"""``diag report``: every analysis in one HTML page, from a new run or from saved run folders.

Without folders: one capture pass per run (baseline + each --mode), then all analyzers
(`lminf_diag.analyze.analyze_all`) and ``<out>/report.html``. With folders
(``diag report runs/a runs/b``): the saved traces are analysed again, no model is loaded.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["report", "--length", "16384"])  # doctest: +SKIP
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

VERB = "report"


def analyze(traces: dict, train_len: int | None = None) -> dict[str, Any]:
    """All analyzers the traces have data for."""
    from lminf_diag.analyze import analyze_all

    return analyze_all(traces, train_len=train_len)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "all analyses in one HTML report (new run or saved run folders)",
        "Without RUN folders: capture one forward pass per run (baseline + each --mode), run every\n"
        "analyzer (logits, entropy, positions, loss) and write <out>/report.html and summary.json.\n"
        "With RUN folders: rebuild the report from their saved traces, without loading a model\n"
        "(the model, text and patch options are then ignored; --train-len still applies).",
        [
            "diag report                                     # smollm2-135m, 16384 tokens, lambda",
            "diag report --length 32768 --repeat --mode lambda --mode mask_only --mode cap_only",
            "diag report runs/report-smollm2-135m-16384      # rebuild from a saved run",
            "diag report runs/a runs/b --out runs/a-vs-b     # several runs in one page",
        ],
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="saved run folders to report on (no new capture)")
    options.add_analysis_options(p)
    return p


def _out_for(args: argparse.Namespace, folders: list[Path]) -> Path:
    if args.out:
        return Path(args.out)
    if len(folders) == 1:
        return folders[0]
    names = "+".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", f.resolve().name) for f in folders)
    return Path("runs") / f"report-{names}"[:100]


def from_folders(args: argparse.Namespace) -> int:
    """Rebuild the report from saved run folders (labels prefixed by folder name when they clash)."""
    from lminf_diag.cli.pipeline import run_meta, write_outputs
    from lminf_diag.cli.progress import timed
    from lminf_diag.errors import RunDirectoryError
    from lminf_diag.runs import RunDir

    folders = [Path(p) for p in args.runs]
    runs = [RunDir.open_existing(f) for f in folders]
    per_run = []
    for run in runs:
        labels = run.trace_labels()
        if not labels:
            raise RunDirectoryError(
                f"{run.path} holds no finished trace yet; finish it by repeating its command."
            )
        per_run.append({lab: run.load_trace(lab) for lab in labels})
    counts: dict[str, int] = {}
    for traces in per_run:
        for lab in traces:
            counts[lab] = counts.get(lab, 0) + 1
    merged: dict = {}
    for run, traces in zip(runs, per_run, strict=True):
        for lab, trace in traces.items():
            name = base = f"{run.path.resolve().name}:{lab}" if counts[lab] > 1 else lab
            i = 1
            while name in merged:  # two folders of the same name
                i += 1
                name = f"{base}#{i}"
            trace.meta.label = name
            merged[name] = trace
    with timed("analysis", sys.stderr):
        results = analyze(merged, train_len=args.train_len)
    out = _out_for(args, folders)
    out.mkdir(parents=True, exist_ok=True)
    if len(runs) == 1:
        meta = run_meta(runs[0], merged, command="report (from saved run)")
    else:
        meta = {"runs": [str(f) for f in folders], "labels": list(merged)}
        for run, traces in zip(runs, per_run, strict=True):
            meta[run.path.resolve().name] = run_meta(run, traces)
    return write_outputs(VERB, out, results, meta, args)


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    if args.runs:
        return from_folders(args)
    from lminf_diag.cli.pipeline import run_analysis

    return run_analysis(args, VERB, analyze)
