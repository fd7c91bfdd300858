"""--method and --rope-factor: rival long-context methods as runs, on every verb.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_method_options(p)
    >>> p.parse_args(["--method", "streaming,lambda+yarn"]).method
    ['streaming', 'lambda+yarn']
"""

from __future__ import annotations

import argparse

from lminf_diag.attention.method_spec import METHOD_HELP, method_names
from lminf_diag.cli.lists import CommaList, comma_list


def add_method_options(p: argparse.ArgumentParser) -> None:
    """--method (repeatable, comma-separated), --rope-factor: rival long-context methods."""
    g = p.add_argument_group("methods (rivals run through the same kernel)")
    g.add_argument(
        "--method",
        action=CommaList,
        type=comma_list(str, "methods", tuple(method_names())),
        default=None,
        metavar="NAME[,NAME]",
        help="long-context method(s) to run next to the baseline, each a run labelled by its name "
        "(with --mode, both sets run); --n-global/--n-local/--limit apply where the method has them "
        "(streaming: --n-global sinks, --n-local recent tokens, default the training length minus the "
        "sinks). Names: " + "; ".join(f"{m}: {h}" for m, h in METHOD_HELP.items())
        + "; and <attention>+<rope>, e.g. lambda+dynamic",
    )
    g.add_argument(
        "--rope-factor",
        type=float,
        default=None,
        help="RoPE scaling factor of linear/dynamic/yarn/llama3 (default: --length / training length)",
    )
