"""``diag lab``: the OOD factors across position-encoding schemes, on the shipped lab models.

Runs every lab model (RoPE, ALiBi, partial RoPE, no position encoding; trained at 128 bytes)
at several multiples of its training length, plain and with LM-Infinite, and one long pass
each for the loss at every position. Writes ``<out>/lab.html`` (one section: key-figure table
per scheme, side-by-side plots, how far each stays fluent) and ``<out>/summary.json``.
Finished (model, length) steps are kept in the run folder: the same command resumes.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["lab", "--models", "lab-rope", "--multiples", "8", "--fluency-multiple", "16"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import Progress

VERB = "lab"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    from lminf_diag.lab.run import LabSettings
    from lminf_diag.lab.specs import lab_names

    d = LabSettings()
    p = options.new_parser(
        subparsers,
        VERB,
        "compare the OOD factors across position schemes on the lab models (minutes)",
        "Run the lab models (small byte-level models, one per position scheme, trained by this\n"
        "toolkit at T = 128 tokens) at several multiples of T, plain and with LM-Infinite\n"
        "(n_local = T): entropy slope past T, logit envelope ratio, position probe R², loss ratio\n"
        "beyond / within T; and how far past T each stays fluent (loss within --tolerance of its\n"
        "in-range loss). Writes <out>/lab.html and <out>/summary.json; repeating resumes.",
        [
            "diag lab                                          # all four models at 8x, 32x, 128x T",
            "diag lab --models lab-rope lab-alibi --multiples 8 64 --fluency-multiple 512",
            "diag lab --json > lab.json",
        ],
    )
    g = p.add_argument_group("lab")
    g.add_argument("--models", nargs="+", choices=lab_names(), default=list(d.models),
                   help="lab models to run (default all four)")
    g.add_argument("--multiples", nargs="+", type=options.bounded_int(2, "multiple of the training length"),
                   default=list(d.multiples), help=f"lengths as multiples of T (default {d.multiples})")
    g.add_argument("--fluency-multiple", type=options.bounded_int(2, "multiple of the training length"),
                   default=d.fluency_multiple,
                   help=f"the loss-by-position pass reads this many x T tokens (default {d.fluency_multiple})")
    g.add_argument("--text", default=d.text, help=f"bundled book or text file (default {d.text}, held out "
                   "from training; shorter texts are repeated)")
    g.add_argument("--n-global", type=options.bounded_int(0, "global tokens"), default=d.n_global,
                   help=f"LM-Infinite's global tokens (default {d.n_global}); n_local is T")
    g.add_argument("--tolerance", type=float, default=d.tolerance,
                   help=f"fluent = loss at most (1 + tolerance) x the in-range loss (default {d.tolerance})")
    options.add_output_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.lab.run import LabSettings, run_lab
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    settings = LabSettings(models=tuple(dict.fromkeys(args.models)), multiples=tuple(args.multiples),
                           fluency_multiple=args.fluency_multiple, text=args.text, n_global=args.n_global,
                           tolerance=args.tolerance)
    settings.check()
    out = Path(args.out) if args.out else Path("runs") / "lab"
    run_dir = RunDir(out, {"task": VERB, **settings.to_dict()}, overwrite=args.overwrite)
    args.resume_hint = f"finished steps are kept in {out} ({RUN_FILE})"
    options.seed_everything(args.seed)
    result = run_lab(settings, run_dir=run_dir, progress=Progress)
    stream = options.human(args)
    for line in result.findings():
        print(line, file=stream)
    run_dir.start()
    meta = {
        "command": VERB,
        "model": ", ".join(settings.models),
        "text": settings.text,
        "train_len": result.train_len,
        **settings.to_dict(),
        "run folder": str(out),
        "started": run_dir.info.get("created"),
        "seconds per step": run_dir.seconds,
        "seconds for this command": round(time.perf_counter() - t0, 2),
        "versions": run_dir.info.get("versions", {}),
    }
    print("", file=sys.stderr)
    return write_outputs(VERB, out, {VERB: result}, meta, args,
                         title="Position schemes past the training length: the lab models")
