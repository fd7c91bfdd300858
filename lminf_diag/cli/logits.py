"""``diag logits``: do attention logits explode at distances never seen in training?

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["logits", "--length", "16384"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
from typing import Any

from lminf_diag.cli import options

VERB = "logits"


def analyze(traces: dict) -> dict[str, Any]:
    """{"logits": logit_explosion(traces)}."""
    from lminf_diag.analyze import logit_explosion

    return {"logits": logit_explosion(traces)}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "attention logits at unseen distances, baseline and patched",
        "Capture one forward pass per run (baseline + each --mode) and compare the running-max\n"
        "attention logit at distances beyond the training length with its level within it.\n"
        "Writes <out>/logits.html and <out>/summary.json; resumes when repeated.",
        [
            "diag logits",
            "diag logits --length 32768 --repeat --out runs/alice-32k",
            "diag logits --model path/to/model --train-len 4096 --length 8192",
        ],
    )
    options.add_analysis_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import run_analysis

    return run_analysis(args, VERB, analyze)
