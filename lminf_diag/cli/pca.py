"""``diag pca``: do hidden states carry implicit absolute position?

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["pca", "--length", "16384"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
from typing import Any

from lminf_diag.cli import options

VERB = "pca"


def analyze(traces: dict) -> dict[str, Any]:
    """{"positions": position_subspaces(traces)}."""
    from lminf_diag.analyze import position_subspaces

    return {"positions": position_subspaces(traces)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "implicit absolute position in hidden states (PCA, probe)",
        "Capture hidden states of a few layers per run (baseline + each --mode), then show them\n"
        "in PCA coloured by position, how far the first tokens sit from the rest, and how well a\n"
        "linear probe reads the position. Writes <out>/pca.html and <out>/summary.json.",
        [
            "diag pca",
            "diag pca --length 8192 --baseline-only",
            "diag pca --stride 4 --out runs/pca-fine",
        ],
    )
    options.add_analysis_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import run_analysis

    return run_analysis(args, VERB, analyze)
