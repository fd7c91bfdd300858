"""``diag passkey``: can the model retrieve a key hidden in long filler text, baseline and patched?

For every length, --trials prompts (default 50) each hide a 5-digit key at a seeded random
depth, uniform in [0, 1] (--depths fixes the depths instead); the same prompts serve every run.
The model answers greedily and is right when the first number it writes is the key. Accuracies
carry Wilson 95% intervals; for each patched run, accuracy is split by whether the needle lies
inside its Λ (the last n_local tokens or the first n_global), next to the share of needles
inside it (the geometric expectation). Every answered prompt is kept in the run folder, so the
same command resumes at the next prompt, and adding lengths, trials, modes or --top-k to a
finished run computes only what is new. --top-k K adds the run "lambda+topK": LM-Infinite plus,
for the row that predicts each next token, the K best "middle" keys per head (the variant of the
reference code used for passkey retrieval).

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["passkey", "--lengths", "2048", "--train-len", "1024", "--trials", "50"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.passkey_options import (
    add_top_k_options,
    add_trials_option,
    parse_depths,
    parse_lengths,
    top_k_args,
)
from lminf_diag.cli.passkey_tables import accuracy_table, lambda_table
from lminf_diag.cli.progress import Progress, warn_short_window

VERB = "passkey"
DEFAULT_LENGTHS = "4096,8192,16384"
COST = (
    "Cost: one prompt is one prefill plus up to --max-new-tokens decoding steps. Measured on 2 shared CPU\n"
    "cores, the embedded SmolLM2-135M takes 5-12 s per prompt at 2048 tokens (8 prompts: baseline 11.7 s,\n"
    "LM-Infinite 5.1 s each); its prefill alone takes about 12 s at 4k, 34 s at 8k and 100 s at 16k tokens,\n"
    "so the defaults (50 prompts x 3 lengths x 2 runs) take several hours, 16k alone about 3 hours. A quick\n"
    "run that still means something: a pretend training length, --train-len 1024 --lengths 2048 (about\n"
    "15 minutes for 50 prompts and 2 runs). A lab model (--model lab-rope --lengths 256,512) takes about\n"
    "0.1 s per prompt but answers none (the prompt alone is 246 bytes, past its T of 128): it checks the\n"
    "mechanics only."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "passkey retrieval accuracy per length, baseline and patched, by the needle's place in the Λ",
        "Hide a 5-digit key in filler text (or a book) of each --lengths tokens, --trials prompts per\n"
        "length at seeded random depths (uniform in [0, 1]; --depths for fixed ones), ask for it, and\n"
        "score greedy answers of the plain model and of each --mode of LM-Infinite. Prints accuracy per\n"
        "run and length with Wilson 95% intervals, and per patched run the accuracy with the needle inside\n"
        "and outside its Λ next to the share inside (the geometric expectation); writes\n"
        "<out>/passkey.html (accuracy vs needle distance) and <out>/summary.json; repeating the command\n"
        "resumes at the next prompt.\n\n" + COST,
        [
            f"diag passkey                                      # lengths {DEFAULT_LENGTHS}, 50 random depths each",
            "diag passkey --train-len 1024 --lengths 2048      # quick: a pretend training length",
            "diag passkey --model lab-rope --lengths 256,512 --trials 10   # mechanics only: answers none",
            "diag passkey --lengths 2048,8192 --depths 0,0.5,1 --trials 30   # fixed depths, 10 prompts each",
            "diag passkey --haystack carroll-alice --patched-only",
            "diag passkey --mode lambda,window --json > passkey.json",
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
        default=None,
        help="fixed needle depths as fractions of the haystack, comma-separated, used in turn by the "
        "prompts of a length (default: a seeded random depth per prompt, uniform in [0, 1])",
    )
    add_trials_option(g)
    g.add_argument(
        "--haystack",
        default="filler",
        help="'filler' (the reference sentences, default), a bundled book name (`diag books`) or a text file",
    )
    g.add_argument(
        "--max-new-tokens",
        type=options.bounded_int(1, "tokens generated per answer"),
        default=8,
        help="tokens generated per answer (default 8)",
    )
    options.add_patch_options(p)
    options.add_method_options(p)
    add_top_k_options(p.add_argument_group("top-k middle tokens (off by default)"))
    options.add_output_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.evaluation import meta, method_settings, patch_args
    from lminf_diag.cli.loading import load
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.evaluate import haystack_sentences, run_passkey
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    stream = options.human(args)
    labels = options.labels(args)
    haystack_sentences(args.haystack)  # a wrong book name fails before the model loads
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
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, None, settings)
    run_dir = RunDir(out, settings, overwrite=args.overwrite)
    args.resume_hint = f"finished lengths are kept in {out} ({RUN_FILE})"
    model, tok, info = load(args)
    warn_short_window(max(args.lengths), info.train_len, "longest prompt", "--lengths")
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
        settings=method_settings(args),
    )
    where = "seeded random depths" if args.depths is None else f"depths {', '.join(map(str, args.depths))}"
    print(
        f"\npasskey accuracy, Wilson 95% intervals (training length T = {info.train_len} tokens; "
        f"{args.trials} prompt(s) per length at {where})",
        file=stream,
    )
    print(accuracy_table(result), file=stream)
    print(
        f"\nby the needle's place in the Λ (n_global = {result.n_global}, n_local = {result.n_local}), "
        "prompts longer than n_local",
        file=stream,
    )
    print(lambda_table(result), file=stream)
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
        depths="random (seeded, uniform in [0, 1])" if args.depths is None else args.depths,
        trials=args.trials,
        haystack=args.haystack,
        seed=args.seed,
        **top,
    )
    return write_outputs(VERB, out, {VERB: result}, info_meta, args)
