"""``diag methods``: rival long-context fixes diagnosed side by side, on the same model and text.

Runs the baseline and each --method (default LM-Infinite, StreamingLLM and dynamic NTK RoPE
scaling) over --windows windows: the three out-of-distribution factors and the loss by position,
the loss of strided re-computation (each token predicted from its last T tokens, re-encoded: the
in-distribution reference), passkey retrieval and the decoding cost (latency and KV cache), all
with the same settings. The report opens with one table: method × factor, each verdict with the
interval it was decided from, loss past T against re-computation, retrieval beyond T, and cost
(`lminf_diag.evaluate.methods_table`). Everything is resumable in the run folder.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["methods", "--model", "lab-rope", "--length", "1024"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
from typing import Any

from lminf_diag.cli import options

VERB = "methods"
DEFAULT_METHODS = ("lambda", "streaming", "dynamic")
DEFAULT_PASSKEY_TRIALS = 10


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    from lminf_diag.cli.references import add_reference_options
    from lminf_diag.cli.sections import add_extra_options

    p = options.new_parser(
        subparsers,
        VERB,
        "rival long-context fixes side by side: factors, loss vs re-computation, retrieval, cost",
        "Run the baseline and each --method (default lambda, streaming, dynamic) on the same windows:\n"
        "every analyzer (logit explosion, entropy growth, implicit position, loss by position), the\n"
        "strided re-computation reference, passkey retrieval (--passkey-trials prompts at --length unless\n"
        "--passkey-lengths is given) and decoding latency / KV cache (at --length unless\n"
        "--decode-contexts is given). The report opens with the methods x factors table. Methods:\n"
        "lambda, mask_only, cap_only, window, topk, streaming, linear, dynamic, yarn, llama3 and\n"
        "<attention>+<rope> combinations such as lambda+dynamic. Cost on 2 CPU cores: the captures of\n"
        "`diag report` per method, plus re-computation and passkey (about 10 s per prompt at 2048\n"
        "tokens per method); the quick path on a lab model takes a few minutes.",
        [
            "diag methods --model lab-rope --length 1024            # quick: lab model trained at 128 tokens",
            "diag methods --method lambda,streaming,yarn,lambda+dynamic",
            "diag methods --train-len 1024 --length 4096 --windows 4   # pretend-T on the embedded model",
        ],
    )
    options.add_analysis_options(p)
    add_reference_options(p)
    add_extra_options(p)
    p.set_defaults(recompute=True)
    return p


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Methods, passkey prompts and decoding contexts this verb runs unless told otherwise."""
    if not getattr(args, "method", None) and not getattr(args, "mode", None):
        args.method = list(DEFAULT_METHODS)
    if not args.passkey_lengths:
        args.passkey_lengths = [args.length]
        if args.passkey_trials == 50:  # the passkey verb's default: too many for a side-by-side run
            args.passkey_trials = DEFAULT_PASSKEY_TRIALS
    if not args.decode_contexts:
        args.decode_contexts = [args.length]
    args.recompute = True
    return args


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.sections import run_with_extras
    from lminf_diag.evaluate.methods_table import methods_table

    fill_defaults(args)
    labels = options.labels(args)

    def summarize(results: dict[str, Any]) -> tuple[str, Any]:
        table = methods_table(results, labels)
        print(f"\n{table.text()}\n", file=options.human(args))  # at most 100 columns
        return "methods", table

    return run_with_extras(args, VERB, summarize)
