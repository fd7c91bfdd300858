"""``diag sweep``: the n_global x n_local trade-off of LM-Infinite or StreamingLLM, and its reach.

Every cell (n_global, n_local) of the grid runs the method over --windows windows of a held-out
book (fluency: loss past T minus the in-range loss, t interval) and --passkey-trials passkey
prompts with the needle beyond n_local (accuracy, Wilson interval, next to the share of needles
inside the Λ). Two heat maps in <out>/sweep.html, the numbers in <out>/summary.json. --reach adds
retrieval accuracy against the needle's distance (to 8 x n_local by default) for lambda, topk,
streaming and re-computation. Finished cells are kept in the run folder: the same command resumes.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["sweep", "--model", "lab-rope", "--n-global", "0,4", "--n-local", "32,64",
    ...       "--length", "512", "--windows", "4", "--passkey-trials", "5"])   # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.lists import CommaList, comma_list
from lminf_diag.cli.parallel_options import add_parallel_options
from lminf_diag.cli.progress import Progress

VERB = "sweep"
REACH_MULTIPLES = (0.5, 1.5, 2, 4, 8)  # default --reach-distances, x the smallest n_local


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    from lminf_diag.evaluate.reach import REACH_RUNS
    from lminf_diag.evaluate.sweep import HELD_OUT, SWEEP_METHODS

    p = options.new_parser(
        subparsers,
        VERB,
        "the n_global x n_local trade-off: fluency and passkey retrieval per cell, heat maps",
        "Run --method (lambda or streaming) at every (n_global, n_local) of the grid: fluency (mean\n"
        "loss past the training length T minus the loss over T/2..T, t interval over --windows\n"
        "windows) and information (passkey accuracy for needles farther than n_local from the\n"
        "question, Wilson interval, next to the share of those needles inside the Λ: the geometric\n"
        "expectation). --reach adds accuracy against the needle's distance for lambda, topk,\n"
        "streaming and re-computation (the answer from the last n_local tokens only). n_local may be\n"
        "set below the model's true training length to keep a CPU run cheap (with --train-len for\n"
        "the fluency figure's T): which keys are attended does not depend on T. Writes\n"
        "<out>/sweep.html and <out>/summary.json; repeating the command resumes.",
        [
            "diag sweep --n-global 0,1,4,10,64 --n-local 256,512,1024 --length 2048 --train-len 1024",
            "diag sweep --method streaming --n-global 0,4 --n-local 256,512 --length 2048 --train-len 1024",
            "diag sweep --model lab-rope --n-global 0,4 --n-local 32,64 --length 512 --passkey-trials 5",
            "diag sweep --reach --n-local 256 --reach-distances 128,512,1024,2048 --train-len 1024",
            "diag sweep --workers 2 ...                     # cells in 2 local processes",
        ],
    )
    options.add_model_options(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--method", choices=SWEEP_METHODS, default="lambda", help="the method swept (default lambda)")
    g.add_argument("--n-global", dest="n_globals", action=CommaList,
                   type=comma_list(options.bounded_int(0, "global tokens"), "n_global values"),
                   default=[0, 1, 4, 10, 64], metavar="G[,G]",
                   help="global tokens (sinks), comma-separated (default 0,1,4,10,64)")
    g.add_argument("--n-local", dest="n_locals", action=CommaList,
                   type=comma_list(options.bounded_int(1, "window size"), "n_local values"),
                   default=[256, 512, 1024], metavar="L[,L]",
                   help="window sizes in tokens, comma-separated (default 256,512,1024)")
    g.add_argument("--length", type=options.bounded_int(2, "tokens"), default=2048,
                   help="tokens per window and per passkey prompt (default 2048); must exceed T and every n_local")
    g.add_argument("--windows", type=options.bounded_int(1, "windows"), default=4,
                   help="windows of the book per cell (default 4; 4 or more give an interval)")
    g.add_argument("--passkey-trials", type=options.bounded_int(0, "prompts per cell"), default=20,
                   help="passkey prompts per cell, needle beyond n_local (default 20; 0 = fluency only)")
    g.add_argument("--text", default=HELD_OUT, help=f"bundled book or text file for the windows (default {HELD_OUT})")
    g.add_argument("--haystack", default="filler", help="passkey haystack: 'filler' (default) or a book name")
    g.add_argument("--max-new-tokens", type=options.bounded_int(1, "tokens"), default=8,
                   help="tokens generated per answer (default 8)")
    g = p.add_argument_group("reach")
    g.add_argument("--reach", action="store_true", help="also measure accuracy against needle distance")
    g.add_argument("--reach-distances", action=CommaList,
                   type=comma_list(options.bounded_int(1, "tokens"), "distances"), default=None, metavar="D[,D]",
                   help="needle distances in tokens (default 0.5,1.5,2,4,8 x the smallest n_local)")
    g.add_argument("--reach-trials", type=options.bounded_int(1, "prompts"), default=10,
                   help="prompts per run and distance (default 10)")
    g.add_argument("--reach-runs", action=CommaList, type=comma_list(str, "runs", REACH_RUNS),
                   default=list(REACH_RUNS), metavar="R[,R]",
                   help=f"runs compared, comma-separated (default {','.join(REACH_RUNS)})")
    g.add_argument("--reach-n-global", type=options.bounded_int(0, "global tokens"), default=10,
                   help="global tokens of the reach runs (default 10); n_local is the smallest --n-local")
    add_parallel_options(p, "cells")
    options.add_output_options(p)
    return p


def reach_distances(args: argparse.Namespace) -> list[int]:
    """--reach-distances, or the default multiples of the smallest n_local.

    >>> reach_distances(argparse.Namespace(reach_distances=None, n_locals=[256, 512]))
    [128, 384, 512, 1024, 2048]
    """
    if args.reach_distances:
        return sorted(set(args.reach_distances))
    base = min(args.n_locals)
    return sorted({max(1, int(round(m * base))) for m in REACH_MULTIPLES})


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.loading import load
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.evaluate.reach import run_reach
    from lminf_diag.evaluate.sweep import run_sweep
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    args.n_local = None  # `load` reads it: the sweep's windows are its own grid
    settings = {"task": VERB, "model": args.model, "dtype": args.dtype, "train_len": args.train_len,
                "method": args.method, "text": args.text, "haystack": args.haystack, "seed": args.seed,
                "max_new_tokens": args.max_new_tokens}
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, args.length, settings, args.windows)
    run_dir = RunDir(out, settings, overwrite=args.overwrite)
    args.resume_hint = f"finished cells are kept in {out} ({RUN_FILE})"
    model, tok, info = load(args)
    T = info.train_len
    ref = model if args.workers <= 1 and args.ray is None else (args.model, options.load_kwargs(args))
    result = run_sweep(ref, tok, method=args.method, n_globals=args.n_globals, n_locals=args.n_locals,
                       length=args.length, windows=args.windows, passkey_trials=args.passkey_trials,
                       train_len=T, text=args.text, haystack=args.haystack, seed=args.seed,
                       max_new_tokens=args.max_new_tokens, run_dir=run_dir, progress=Progress,
                       workers=args.workers, ray_address=args.ray)
    results: dict[str, Any] = {VERB: result}
    extra: dict[str, Any] = {}
    if args.reach:
        n_local = min(args.n_locals)
        dists = reach_distances(args)
        results["reach"] = run_reach(model, tok, n_local=n_local, distances=dists, n_global=args.reach_n_global,
                                     runs=args.reach_runs, trials=args.reach_trials, train_len=T,
                                     haystack=args.haystack, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                     run_dir=run_dir, progress=Progress)
        extra = {"reach n_local": n_local, "reach distances": dists, "reach trials": args.reach_trials}
    run_dir.start()
    true_t = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    note = ("n_local below the model's training length: which keys are attended does not depend on T, "
            "so retrieval carries over; T only sets where plain positions leave the training range"
            if true_t and min(args.n_locals) < int(true_t) else "-")
    meta = {
        "command": VERB, "model": args.model, "train_len": T, "method": args.method,
        "n_global": args.n_globals, "n_local": args.n_locals, "length": args.length, "windows": args.windows,
        "passkey trials": args.passkey_trials, "text": args.text, "seed": args.seed, "note": note, **extra,
        "settings": run_dir.info.get("args", {}), "run folder": str(out), "started": run_dir.info.get("created"),
        "git": run_dir.info.get("git") or "-", "seconds per step": run_dir.seconds,
        "seconds for this command": round(time.perf_counter() - t0, 2), "device": args.device or "cpu",
        "versions": run_dir.info.get("versions", {}),
    }
    print("", file=sys.stderr)
    return write_outputs(VERB, out, results, meta, args,
                         title=f"{args.method}: the n_global x n_local trade-off")
