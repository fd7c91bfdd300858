"""``diag``: the entry point. Parses the verb, runs it, and turns bad input into one-line errors.

Verbs are registered lazily: only the module of the verb being run is imported, the others
appear in ``diag --help`` through the `VERBS` table. ``diag --help``, ``diag --version``,
``diag models`` and ``diag books`` therefore never import torch, transformers or the analyzers.

Exit codes: 0 success; 2 bad input (``error: <message>`` on stderr, no traceback: every
`DiagError` and argparse's own errors); 1 a file could not be read or written; 130 interrupted
(finished steps stay in the run folder, so the same command resumes). A closed pipe
(``diag models | head -1``) ends the command quietly.

Example:
    >>> main(["models", "--json"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from types import ModuleType

# verb -> the one-line summary of `diag --help` (each verb module's parser uses the same words)
VERBS: dict[str, str] = {
    "models": "list the embedded models and the supported model families",
    "books": "list the bundled books (names for --text), their size and provenance",
    "generate": "greedy continuation of a long prompt, baseline and patched, with tokens/s",
    "entropy": "attention entropy vs tokens attended, baseline and patched",
    "logits": "attention logits at unseen distances, baseline and patched",
    "pca": "implicit absolute position in hidden states (PCA, probe)",
    "ppl": "per-token loss vs position over several documents, baseline and patched",
    "passkey": "passkey retrieval accuracy per length, baseline and patched, by the needle's place in the Λ",
    "report": "all analyses in one HTML report (new run or saved run folders)",
    "methods": "rival long-context fixes side by side: factors, loss vs re-computation, retrieval, cost",
    "lab": "compare the OOD factors across position schemes on the lab models (about 25 minutes)",
    "stream": "per-token loss over a text of any length (a million tokens), chunked, in flat memory",
    "sweep": "the n_global x n_local trade-off: fluency and passkey retrieval per cell, heat maps",
}
OPTIONAL = ("ppl", "passkey", "stream")  # owned by other modules; registered when present

EXAMPLES = [
    "diag models                                   # embedded models and supported families",
    "diag books                                    # the bundled books (--text NAME)",
    "diag report                                   # smollm2-135m, 4 windows of 12288 tokens: the HTML report",
    "diag entropy --model lab-rope --length 512    # quick: a lab model trained at 128 tokens",
    "diag entropy --length 4096 --out runs/alice-4k",
    "diag generate --length 12000 --max-new-tokens 40",
    "diag report runs/a runs/b --out runs/a-vs-b   # one page from saved runs",
    "diag lab                                      # position schemes compared on the lab models",
    "diag methods --model lab-rope --length 1024   # LM-Infinite, StreamingLLM, dynamic NTK side by side",
    "diag VERB --help                              # options and examples of a verb",
]


def verb_module(name: str) -> ModuleType | None:
    """The module of one verb, or None for an optional verb that is not installed."""
    module = f"lminf_diag.cli.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if name in OPTIONAL and err.name == module:
            return None
        raise


def verb_modules() -> dict[str, ModuleType]:
    """Every verb module that exists, in help order (imports them all: slow, for tests and docs)."""
    out = {name: verb_module(name) for name in VERBS}
    return {name: module for name, module in out.items() if module is not None}


def _verb_in(argv: list[str]) -> str | None:
    """The verb named on the command line (the first word not starting with '-'), if known.

    >>> _verb_in(["--json", "models"]), _verb_in(["--version"]), _verb_in(["nope"])
    ('models', None, None)
    """
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in VERBS else None


def build_parser(modules: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: a full sub-parser for each module in `modules`, a stub for the rest.

    >>> sorted(build_parser({})._subparsers._group_actions[0].choices)[:3]
    ['books', 'entropy', 'generate']
    """
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
    for name, summary in VERBS.items():
        if name in modules:
            modules[name].add_parser(sub)
        else:  # listed in --help; its module is imported only when the verb runs
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _interrupted(args: argparse.Namespace) -> int:
    hint = getattr(args, "resume_hint", None)
    where = f"; {hint}" if hint else ""
    print(f"\ninterrupted{where}. Run the same command again to resume.", file=sys.stderr)
    return 130


def _pipe_closed() -> int:
    """The reader went away (``| head``): stop quietly, as command-line tools do."""
    try:  # point stdout at /dev/null so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 0


def _quiet_transformers() -> None:
    """No download bars (our own progress lines say what happens), no maximum-length reminders (the
    toolkit runs past the training length on purpose), no hub retry chatter."""
    if "transformers" not in sys.modules and importlib.util.find_spec("transformers") is None:
        return
    from transformers.utils import logging as hf_logging

    from lminf_diag.models.loader import silence_length_warnings

    hf_logging.disable_progress_bar()
    silence_length_warnings()
    try:  # the hub's retry warnings ("Retrying in 1s") would come before the one clear loading error
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - huggingface_hub always comes with transformers
        pass


def main(argv: list[str] | None = None) -> int:
    """Run ``diag`` with `argv` (default: sys.argv[1:]); returns the exit code.

    >>> main(["--version"])  # doctest: +SKIP
    diag (lminf_diag) 0.1.0
    0
    """
    from lminf_diag.errors import DiagError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        verb = _verb_in(argv)
        module = verb_module(verb) if verb else None
        modules = {verb: module} if module is not None else {}
        parser = build_parser(modules)
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # --help, --version, argparse errors (already printed)
            return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
        if not args.verb:
            parser.print_help(sys.stderr)
            return 2
        if args.verb not in modules:  # an optional verb that is not installed
            print(f"error: the verb {args.verb!r} is not available in this installation", file=sys.stderr)
            return 2
        try:
            if args.verb not in ("models", "books"):
                from lminf_diag.util.allocator import keep_freed_memory

                _quiet_transformers()
                keep_freed_memory()  # freed tensors reused, not faulted in again page by page
            code = int(modules[args.verb].run(args) or 0)
            sys.stdout.flush()
            return code
        except DiagError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return _interrupted(args)
        except BrokenPipeError:
            raise
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    except BrokenPipeError:
        return _pipe_closed()


if __name__ == "__main__":
    sys.exit(main())
