"""The passkey options shared by `diag passkey` and the passkey section of `diag report` / `diag methods`.

Lengths and depths as comma-separated lists, --trials, and the top-k middle-tokens options, with
an optional prefix ("--passkey-") where they sit among other options.

Example:
    >>> from lminf_diag.cli.passkey_options import parse_lengths, parse_depths
    >>> parse_lengths("2048,4096"), parse_depths("0,1")
    ([2048, 4096], [0.0, 1.0])
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from lminf_diag.cli import options
from lminf_diag.evaluate.passkey import DEFAULT_TRIALS


def _parse_list(text: str, cast: Callable[[str], Any], example: str, ok: Callable[[Any], bool], rule: str) -> list:
    """Comma-separated values through `cast`, each passing `ok`; repeats dropped, order kept."""
    try:
        values = [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {example}; got {text!r}") from None
    if not values or not all(ok(v) for v in values):
        raise argparse.ArgumentTypeError(f"{rule}; got {text!r}")
    return list(dict.fromkeys(values))


def parse_lengths(text: str) -> list[int]:
    """``"4096,16384"`` -> [4096, 16384] (whole numbers >= 1, repeats dropped, order kept).

    >>> parse_lengths("4096, 16384,4096")
    [4096, 16384]
    """
    return _parse_list(text, int, "token counts such as 4096,16384", lambda v: v >= 1,
                       "lengths must be whole numbers of tokens >= 1")


def parse_depths(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0] (fractions of the haystack before the needle).

    >>> parse_depths("0, .5,1")
    [0.0, 0.5, 1.0]
    """
    return _parse_list(text, float, "fractions such as 0,0.5,1", lambda v: 0.0 <= v <= 1.0,
                       "depths must be fractions between 0 and 1")


def add_trials_option(g: Any, prefix: str = "--", dest: str = "trials") -> None:
    """--trials N (alias --prompts N): prompts per length (with `prefix`, e.g. "--passkey-" in `diag report`)."""
    g.add_argument(
        f"{prefix}trials",
        f"{prefix}prompts",
        dest=dest,
        type=options.bounded_int(1, "prompts per length"),
        default=DEFAULT_TRIALS,
        metavar="N",
        help=f"prompts per length, each with its own seeded key and depth (default {DEFAULT_TRIALS}; "
        "the reference scripts use 200)",
    )


def add_top_k_options(g: Any, prefix: str = "--") -> None:
    """--top-k, --top-k-from-layer, --top-k-distance (with `prefix`, e.g. "--passkey-" in `diag report`)."""
    g.add_argument(
        f"{prefix}top-k",
        dest="top_k",
        type=options.bounded_int(0, "middle tokens per head added to the last row; 0 = off"),
        default=0,
        metavar="K",
        help="also run LM-Infinite with the top-K middle tokens (label lambda+topK): the row predicting "
        "each next token also attends, per head, to its K best-scoring keys outside the window and the "
        "global tokens, seen at distance --top-k-distance; the KV cache is then not bounded "
        "(default 0 = off; the reference code used 5)",
    )
    g.add_argument(
        f"{prefix}top-k-from-layer",
        dest="top_k_from_layer",
        type=options.bounded_int(0, "index of the first layer using the top-k middle tokens"),
        default=4,
        metavar="L",
        help="with --top-k: layers with index >= L use the middle tokens (default 4)",
    )
    g.add_argument(
        f"{prefix}top-k-distance",
        dest="top_k_distance",
        type=options.bounded_int(0, "distance at which the middle tokens are seen"),
        default=None,
        metavar="D",
        help="with --top-k: the distance at which the middle tokens are seen (default n_local // 2)",
    )


def top_k_args(args: argparse.Namespace) -> dict[str, Any]:
    """The top-k settings as `run_passkey` takes them."""
    return {
        "top_k": getattr(args, "top_k", 0),
        "top_k_from_layer": getattr(args, "top_k_from_layer", 4),
        "top_k_distance": getattr(args, "top_k_distance", None),
    }
