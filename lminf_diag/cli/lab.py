"""``diag lab``: the OOD factors across position-encoding schemes, on the shipped lab models.

Runs every lab model (RoPE, ALiBi, partial RoPE, no position encoding; trained at 128 bytes)
at several multiples of its training length over K windows of the held-out book, plain and with
LM-Infinite, one long loss pass each, and a copy task (`lminf_diag.lab.run.run_lab`). Writes
``<out>/lab.html`` and ``<out>/summary.json`` through the shared `write_outputs` (verdicts, key
figures with intervals between windows, findings). Finished cells are kept in the run folder:
the same command resumes.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["lab", "--models", "lab-rope", "--multiples", "4", "--windows", "4"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.parallel_options import add_parallel_options
from lminf_diag.cli.progress import Progress

VERB = "lab"
DEFAULT_MINUTES = 25  # per-step timings measured on 2 idle CPU cores, summed over the default grid


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    from lminf_diag.data import list_books
    from lminf_diag.lab.run import LabSettings
    from lminf_diag.lab.specs import lab_names

    d = LabSettings()
    p = options.new_parser(
        subparsers,
        VERB,
        f"compare the OOD factors across position schemes on the lab models (about {DEFAULT_MINUTES} minutes)",
        "Run the lab models (small byte-level models, one per position scheme, trained by this\n"
        "toolkit at T = 128 tokens) over --windows windows of the held-out book at several multiples\n"
        "of T, plain and with LM-Infinite (n_local = T): every analyzer's verdicts and key figures,\n"
        "with intervals between windows; a loss pass to --fluency-multiple x T ('fluent until',\n"
        "censored as >=); and a copy task (a random string repeated d tokens later) that tells\n"
        "'fluent' from 'uses the context'. Writes <out>/lab.html and <out>/summary.json; repeating\n"
        f"resumes. Cost on 2 CPU cores: about {DEFAULT_MINUTES} minutes idle (per model about 1 min at\n"
        "8x T, 1.5 min at 32x T, 3 min for the loss pass, 1 min for the copy task), about 45 minutes\n"
        "when the cores are shared with other work (measured).",
        [
            "diag lab                                          # all four models, 8x and 32x T, 16 windows",
            "diag lab --models lab-rope,lab-nope --multiples 4,8 --windows 4 --fluency-multiple 8",
            "diag lab --json > lab.json",
        ],
    )
    g = p.add_argument_group("lab")
    g.add_argument(
        "--models",
        action=options.CommaList,
        type=options.comma_list(str, "lab models", tuple(lab_names())),
        default=list(d.models),
        metavar="NAME[,NAME]",
        help="lab models to run, comma-separated (default the four schemes); a seed-0 name such as lab-rope runs its "
        "first --seeds seeds, a seeded name such as lab-rope-s1 runs that model only",
    )
    g.add_argument(
        "--seeds",
        type=options.bounded_int(1, "seeds"),
        default=None,
        help="training seeds per scheme (default: every seed shipped; up to 3): a scheme's verdict "
        "holds only when every seed agrees",
    )
    g.add_argument(
        "--multiples",
        action=options.CommaList,
        type=options.comma_list(options.bounded_int(2, "multiple of the training length"), "multiples of T"),
        default=list(d.multiples),
        metavar="M[,M]",
        help=f"lengths as multiples of T, comma-separated (default {','.join(map(str, d.multiples))})",
    )
    g.add_argument(
        "--windows",
        type=options.bounded_int(1, "windows"),
        default=d.windows,
        help=f"independent windows of the held-out book per cell (default {d.windows})",
    )
    g.add_argument(
        "--copy-trials",
        type=options.bounded_int(0, "copy-task trials"),
        default=d.copy_trials,
        help=f"copy-task trials per distance, 0 skips it (default {d.copy_trials})",
    )
    g.add_argument(
        "--copy-distances",
        action=options.CommaList,
        type=options.comma_list(float, "copy-task distances"),
        default=list(d.copy_distances),
        metavar="D[,D]",
        help=f"copy-task distances as multiples of T, comma-separated (default "
        f"{','.join(map(str, d.copy_distances))})",
    )
    g.add_argument(
        "--fluency-multiple",
        type=options.bounded_int(2, "multiple of the training length"),
        default=d.fluency_multiple,
        help=f"the loss-by-position pass reads this many x T tokens (default {d.fluency_multiple})",
    )
    g.add_argument(
        "--text",
        default=d.text,
        help=f"bundled book ({', '.join(list_books())}; `diag books`) or text file (default {d.text}, held out "
        "from training; shorter texts are repeated)",
    )
    g.add_argument(
        "--n-global",
        type=options.bounded_int(0, "global tokens"),
        default=d.n_global,
        help=f"LM-Infinite's global tokens (default {d.n_global}); n_local is T",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=d.tolerance,
        help=f"fluent = loss at most (1 + tolerance) x the in-range loss (default {d.tolerance})",
    )
    add_parallel_options(p, "lab's independent units (cells, loss passes, copy tasks)")
    options.add_output_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.lab.run import LabSettings, run_lab
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    settings = LabSettings(
        models=tuple(dict.fromkeys(args.models)),
        seeds=args.seeds,
        multiples=tuple(args.multiples),
        fluency_multiple=args.fluency_multiple,
        text=args.text,
        n_global=args.n_global,
        tolerance=args.tolerance,
        windows=args.windows,
        copy_trials=args.copy_trials,
        copy_distances=tuple(args.copy_distances),
    )
    settings.check()
    if args.out:
        out = Path(args.out)
    else:
        from lminf_diag.runs import run_folder_name

        out = Path("runs") / run_folder_name(VERB, "", None, settings.windows, settings.to_dict())
    run_dir = RunDir(out, {"task": VERB, **settings.to_dict()}, overwrite=args.overwrite)
    args.resume_hint = f"finished steps are kept in {out} ({RUN_FILE})"
    options.seed_everything(args.seed)
    result = run_lab(settings, run_dir=run_dir, progress=Progress, workers=args.workers, ray_address=args.ray)
    run_dir.start()
    meta = {
        "command": VERB,
        "model": ", ".join(settings.models),
        "text": settings.text,
        "train_len": result.train_len,
        "windows": settings.windows,
        **settings.to_dict(),
        "run folder": str(out),
        "started": run_dir.info.get("created"),
        "git": run_dir.info.get("git") or "-",
        "settings": settings.to_dict(),
        "seconds per step": run_dir.seconds,
        "seconds for this command": round(time.perf_counter() - t0, 2),
        "versions": run_dir.info.get("versions", {}),
    }
    print("", file=sys.stderr)
    return write_outputs(
        VERB,
        out,
        {VERB: result},
        meta,
        args,
        title="Position schemes past the training length: the lab models",
    )
