"""``diag entropy``: does attention entropy keep growing like ln n past the training length?

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["entropy", "--length", "16384"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
from typing import Any

from lminf_diag.cli import options

VERB = "entropy"


def analyze(traces: dict) -> dict[str, Any]:
    """{"entropy": entropy_growth(traces)}."""
    from lminf_diag.analyze import entropy_growth

    return {"entropy": entropy_growth(traces)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "attention entropy vs tokens attended, baseline and patched",
        "Capture one forward pass per run (baseline + each --mode) over a token window and fit\n"
        "entropy = a + b ln n within and beyond the training length. Writes <out>/entropy.html\n"
        "and <out>/summary.json; an interrupted run resumes when the same command is repeated.",
        [
            "diag entropy                                    # smollm2-135m, 4 windows of 12288 tokens",
            "diag entropy --length 4096 --layers 0,5,10 --out runs/alice-4k",
            "diag entropy --text my_book.txt --repeat --mode lambda --mode window",
            "diag entropy --json > entropy.json",
        ],
    )
    options.add_analysis_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import run_analysis

    return run_analysis(args, VERB, analyze)
