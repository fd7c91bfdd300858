"""``diag``: the entry point. Parses the verb, runs it, and turns bad input into one-line errors.

Exit codes: 0 success; 2 bad input (``error: <message>`` on stderr, no traceback: every
`DiagError` and argparse's own errors); 1 a file could not be read or written; 130 interrupted
(finished steps stay in the run folder, so the same command resumes).

Example:
    >>> main(["models", "--json"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

VERBS = ("models", "generate", "entropy", "logits", "pca", "ppl", "passkey", "report", "lab")
OPTIONAL = ("ppl", "passkey")  # owned by other modules; registered when present

EXAMPLES = [
    "diag models                                   # embedded models and supported families",
    "diag report                                   # smollm2-135m, 4 windows of 12288 tokens: the HTML report",
    "diag entropy --length 4096 --out runs/alice-4k",
    "diag generate --length 12000 --max-new-tokens 40",
    "diag report runs/a runs/b --out runs/a-vs-b   # one page from saved runs",
    "diag lab                                      # position schemes compared on the lab models",
    "diag VERB --help                              # options and examples of a verb",
]


def verb_modules() -> dict[str, ModuleType]:
    """The verb modules that exist, in help order (optional verbs skipped when missing)."""
    out: dict[str, ModuleType] = {}
    for name in VERBS:
        module = f"lminf_diag.cli.{name}"
        try:
            out[name] = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if name in OPTIONAL and err.name == module:
                continue
            raise
    return out


def build_parser(modules: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per verb."""
    from lminf_diag import __version__
    from lminf_diag.cli.options import examples_epilog

    modules = verb_modules() if modules is None else modules
    parser = argparse.ArgumentParser(
        prog="diag",
        description="Why language models break down past their training length (attention logit "
        "explosion, entropy growth, implicit absolute position) and what LM-Infinite's "
        "Λ-shaped attention does about it.",
        epilog=examples_epilog(*EXAMPLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"diag (lminf_diag) {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for module in modules.values():
        module.add_parser(sub)
    return parser


def _interrupted(args: argparse.Namespace) -> int:
    hint = getattr(args, "resume_hint", None)
    where = f"; {hint}" if hint else ""
    print(f"\ninterrupted{where}. Run the same command again to resume.", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Run ``diag`` with `argv` (default: sys.argv[1:]); returns the exit code.

    >>> main(["--version"])  # doctest: +SKIP
    diag (lminf_diag) 0.1.0
    0
    """
    from lminf_diag.errors import DiagError

    modules = verb_modules()
    parser = build_parser(modules)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, argparse errors (already printed)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    if not args.verb:
        parser.print_help(sys.stderr)
        return 2
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress lines say what is happening
        return int(modules[args.verb].run(args) or 0)
    except DiagError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
