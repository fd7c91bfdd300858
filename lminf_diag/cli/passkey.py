"""``diag passkey``: can the model retrieve a key hidden in long filler text, baseline and patched?

For every length, depth and trial a prompt hides a 5-digit key (the same prompts for every
run); the model answers greedily and is right when the first number it writes is the key.
Every finished (run, length) is kept in the run folder, so the same command resumes, and
adding lengths, modes or --top-k to a finished run computes only what is new. --top-k K adds the
run "lambda+topK": LM-Infinite plus, for the row that predicts each next token, the K best
"middle" keys per head (the variant of the reference code used for passkey retrieval).

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["passkey", "--lengths", "4096,16384", "--depths", "0,0.5,1"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import Progress

VERB = "passkey"
DEFAULT_LENGTHS = "4096,8192,16384"
DEFAULT_DEPTHS = "0,0.25,0.5,0.75,1"


def parse_lengths(text: str) -> list[int]:
    """``"4096,16384"`` -> [4096, 16384] (whole numbers >= 1, repeats dropped, order kept).

    >>> parse_lengths("4096, 16384,4096")
    [4096, 16384]
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token counts such as 4096,16384; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"lengths must be whole numbers of tokens >= 1; got {text!r}")
    return list(dict.fromkeys(values))


def parse_depths(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0] (fractions of the haystack before the needle).

    >>> parse_depths("0, .5,1")
    [0.0, 0.5, 1.0]
    """
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions such as 0,0.5,1; got {text!r}"
        ) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"depths must be fractions between 0 and 1; got {text!r}")
    return list(dict.fromkeys(values))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "passkey retrieval accuracy per length and depth, baseline and patched",
        "Hide a 5-digit key at each --depths fraction of filler text (or a book) of each --lengths\n"
        "tokens, ask for it, and score greedy answers of the plain model and of each --mode of\n"
        "LM-Infinite. Prints accuracy per run and length; writes <out>/passkey.html (heat maps\n"
        "of length x depth) and <out>/summary.json; repeating the command resumes.",
        [
            f"diag passkey                                      # lengths {DEFAULT_LENGTHS}, depths {DEFAULT_DEPTHS}",
            "diag passkey --lengths 2048,8192,32768 --depths 0,0.5,1 --trials 3",
            "diag passkey --haystack carroll-alice --patched-only",
            "diag passkey --mode lambda --mode window --json > passkey.json",
            "diag passkey --top-k 5 --lengths 4096,16384    # + LM-Infinite with the top-5 middle tokens",
        ],
    )
    options.add_model_options(p)
    g = p.add_argument_group("passkey")
    g.add_argument(
        "--lengths",
        type=parse_lengths,
        default=parse_lengths(DEFAULT_LENGTHS),
        help=f"prompt lengths in tokens, comma-separated (default {DEFAULT_LENGTHS})",
    )
    g.add_argument(
        "--depths",
        type=parse_depths,
        default=parse_depths(DEFAULT_DEPTHS),
        help=f"needle depths as fractions of the haystack, comma-separated (default {DEFAULT_DEPTHS})",
    )
    g.add_argument(
        "--trials",
        type=options.bounded_int(1, "prompts per length and depth"),
        default=1,
        help="prompts (different keys) per length and depth (default 1)",
    )
    g.add_argument(
        "--haystack",
        default="filler",
        help="'filler' (the reference sentences, default), a bundled book name or a text file",
    )
    g.add_argument(
        "--max-new-tokens",
        type=options.bounded_int(1, "tokens generated per answer"),
        default=8,
        help="tokens generated per answer (default 8)",
    )
    options.add_patch_options(p)
    add_top_k_options(p.add_argument_group("top-k middle tokens (off by default)"))
    options.add_output_options(p)
    return p


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


def accuracy_table(result: Any) -> str:
    """Plain-text accuracy table: one row per run, one column per length, then within / beyond."""
    from lminf_diag.report import fmt

    by_length = result.accuracy_by_length()
    summary = result.summary()
    header = ["run", *[str(n) for n in result.lengths], "within T", "beyond T"]
    rows = [
        [
            lab,
            *[fmt(float(by_length.loc[lab, n])) for n in result.lengths],
            fmt(summary[lab]["accuracy_within"]),
            fmt(summary[lab]["accuracy_beyond"]),
        ]
        for lab in result.labels
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.cli.ppl import load, meta, patch_args
    from lminf_diag.evaluate import haystack_sentences, run_passkey
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    stream = options.human(args)
    labels = options.labels(args)
    haystack_sentences(args.haystack)  # a wrong book name fails before the model loads
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, max(args.lengths))
    settings = {
        "task": VERB,
        "model": args.model,
        "dtype": args.dtype,
        "train_len": args.train_len,
        "haystack": args.haystack,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        **patch_args(args),
    }  # like --mode, --top-k is not a folder setting: its cells record it, so it can be added later
    run_dir = RunDir(out, settings, overwrite=args.overwrite)
    args.resume_hint = f"finished lengths are kept in {out} ({RUN_FILE})"
    model, tok, info = load(args)
    result = run_passkey(
        model,
        tok,
        args.lengths,
        args.depths,
        trials=args.trials,
        seed=args.seed,
        modes=labels,
        haystack=args.haystack,
        max_new_tokens=args.max_new_tokens,
        train_len=info.train_len,
        run_dir=run_dir,
        progress=Progress,
        **patch_args(args),
        **top_k_args(args),
    )
    print(
        f"\npasskey accuracy (training length T = {info.train_len} tokens; "
        f"{len(args.depths)} depth(s) x {args.trials} trial(s) per length)",
        file=stream,
    )
    print(accuracy_table(result), file=stream)
    run_dir.start()
    top = top_k_args(args) if args.top_k else {}
    if top and top["top_k_distance"] is None:
        top["top_k_distance"] = (args.n_local or info.train_len) // 2
    info_meta = meta(
        VERB,
        run_dir,
        args,
        info,
        list(result.labels),
        t0,
        lengths=args.lengths,
        depths=args.depths,
        trials=args.trials,
        haystack=args.haystack,
        seed=args.seed,
        **top,
    )
    return write_outputs(VERB, out, {VERB: result}, info_meta, args)
