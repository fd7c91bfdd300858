"""``diag ppl``: per-token loss against position over several documents, baseline and patched.

Each document gives its first --length tokens and is one independent window: every key figure
carries an interval between documents. The in-range reference is the mean loss over positions
T/2..T; log bins run to the end of the window; "fluent until" is a sustained crossing, censored
windows shown as ≥. ``--recompute`` adds the in-distribution reference on the same tokens
(each token from its last T tokens re-encoded; its cost is printed), ``--control shuffled`` a
paragraph-shuffled copy of each document (contamination control). Every finished
(run, document) is kept in the run folder, so the same command resumes, and adding documents
or modes to a finished run computes only what is new.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["ppl", "--length", "16384", "--baseline-max-length", "12288"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.evaluation import meta, method_settings, patch_args
from lminf_diag.cli.progress import Progress, warn_short_window

VERB = "ppl"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    from lminf_diag.data import list_books
    from lminf_diag.evaluate.documents import DEFAULT_DOCUMENTS

    p = options.new_parser(
        subparsers,
        VERB,
        "per-token loss vs position over several documents, baseline and patched",
        "Run the plain model and each --mode of LM-Infinite over the first --length tokens of\n"
        "every document (one independent window each) and plot the mean per-token loss against\n"
        "position, with its spread across documents. Prints, per document and as estimates with a\n"
        "95% interval between documents: the in-range loss (positions T/2..T), the loss past T to\n"
        "the end of the window, their difference, and how far each run stays fluent (a sustained\n"
        "rise above (1 + tolerance) x in-range; '>= n' when it never leaves the band).\n"
        "--recompute adds the in-distribution reference on the same tokens (each token from its\n"
        "last T tokens re-encoded, about 5x the forward work of one plain pass at the default\n"
        "stride); --control shuffled adds a paragraph-shuffled copy of each document (the bundled\n"
        "books are classics, likely in the training data).\n"
        "Writes <out>/ppl.html and <out>/summary.json; repeating the command resumes.",
        [
            "diag ppl                                         # 3 bundled books, 16384 tokens, baseline + lambda",
            "diag ppl --docs carroll-alice,my_texts/ --length 32768 --baseline-max-length 16384",
            "diag ppl --mode lambda,window --n-global 100 --out runs/ppl-ablation",
            "diag ppl --patched-only --json > ppl.json",
            "diag ppl --recompute --control shuffled --length 12288   # + in-distribution reference, control",
        ],
    )
    options.add_model_options(p)
    g = p.add_argument_group("documents")
    g.add_argument(
        "--docs",
        action=options.CommaList,
        type=options.comma_list(str, "documents"),
        metavar="DOC[,DOC]",
        default=list(DEFAULT_DOCUMENTS),
        help=f"comma-separated bundled book names ({', '.join(list_books())}; `diag books`), text files, or "
        f"folders (every .txt inside) (default: {','.join(DEFAULT_DOCUMENTS)}); documents shorter than "
        "--length are skipped",
    )
    g.add_argument(
        "--length",
        type=options.bounded_int(2, "tokens per document"),
        default=options.DEFAULT_LENGTH,
        help=f"tokens taken from the start of each document (default {options.DEFAULT_LENGTH})",
    )
    g.add_argument(
        "--baseline-max-length",
        type=options.bounded_int(2, "tokens the unpatched model reads"),
        default=None,
        help="run the baseline on the first N tokens only (it is slow and degenerate far past the "
        "training length); the report and the table say so",
    )
    g.add_argument(
        "--smooth",
        type=options.bounded_int(1, "moving-average window in tokens"),
        default=None,
        help="moving-average window of the curves (default: the training length / 16)",
    )
    g.add_argument(
        "--recompute",
        action="store_true",
        help="add the in-distribution reference on the same tokens: every token past T predicted from its "
        "last T tokens, re-encoded with plain attention (label 'recompute'; its cost is printed)",
    )
    g.add_argument(
        "--recompute-stride",
        type=options.bounded_int(1, "target tokens per re-encoded pass"),
        default=None,
        help="targets per re-encoded pass (default T // 4: context between 3T/4 and T tokens; 1 = exactly T, "
        "T times the passes)",
    )
    g.add_argument(
        "--control",
        choices=["shuffled"],
        default=None,
        help="contamination control: also run the baseline on a paragraph-shuffled copy of each document "
        "(label 'baseline (shuffled)'); a model that memorised the text has a much lower loss on the "
        "original",
    )
    options.add_patch_options(p)
    options.add_method_options(p)
    options.add_output_options(p)
    return p


def per_document_table(result: Any) -> str:
    """Per document (rows) and label: in-range loss (T/2..T), loss past T, and fluent until ('≥' censored).

    >>> import numpy as np
    >>> from lminf_diag.evaluate.documents_result import DocumentPerplexityResult
    >>> nll = {"baseline": np.r_[np.nan, np.ones(15)]}
    >>> r = DocumentPerplexityResult.build(["baseline"], 4, 16, ["a"], nll)
    >>> print(per_document_table(r))
    per document: mean NLL (nats/token) over T/2..T and past T; fluent until (tokens)
    document  baseline T/2..T  baseline >T  baseline fluent
    a         1.000            1.000        ≥ 16
    """
    frame = result.document_frame().set_index(["document", "label"])
    heads = {"in_range": "T/2..T", "past": ">T", "fluent_text": "fluent"}
    cols = [
        (lab, k) for lab in result.labels for k in heads if not (k == "fluent_text" and lab == "recompute")
    ]
    header = ["document"] + [f"{lab} {heads[k]}" for lab, k in cols]
    rows = []
    for doc in result.documents:
        cells = []
        for lab, k in cols:
            v = frame.loc[(doc, lab), k] if (doc, lab) in frame.index else float("nan")
            cells.append(v if isinstance(v, str) else ("n/a" if v != v else f"{v:.3f}"))
        rows.append([doc, *cells])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "per document: mean NLL (nats/token) over T/2..T and past T; fluent until (tokens)\n" + "\n".join(
        lines
    )


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.errors import TextTooShortError
    from lminf_diag.evaluate import perplexity_over_documents, resolve_documents
    from lminf_diag.runs import RUN_FILE, RunDir

    t0 = time.perf_counter()
    stream = options.human(args)
    labels = options.labels(args)
    resolve_documents(args.docs)  # a wrong name fails before the model loads
    settings = {
        "task": VERB,
        "model": args.model,
        "length": args.length,
        "dtype": args.dtype,
        "train_len": args.train_len,
        "baseline_max_length": args.baseline_max_length,
        **patch_args(args),
    }
    # --recompute and --control are not run settings: their cells carry their own (stride, seed), so
    # adding them to a finished run computes only what is new
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, args.length, settings)
    run_dir = RunDir(out, settings, overwrite=args.overwrite)
    args.resume_hint = f"finished documents are kept in {out} ({RUN_FILE})"
    from lminf_diag.cli.loading import load

    model, tok, info = load(args)
    warn_short_window(args.length, info.train_len, "documents' length")
    result = perplexity_over_documents(
        model,
        tok,
        args.docs,
        args.length,
        modes=labels,
        baseline_max_length=args.baseline_max_length,
        smooth=args.smooth,
        train_len=info.train_len,
        run_dir=run_dir,
        progress=Progress,
        recompute=args.recompute,
        recompute_stride=args.recompute_stride,
        control=args.control,
        settings=method_settings(args),
    )
    for note in result.notes:
        print(note, file=stream)
    if not result.documents:
        raise TextTooShortError(
            f"No document has {args.length} tokens; pass a smaller --length or longer documents."
        )
    print(f"documents ({len(result.documents)}): {', '.join(result.documents)}", file=stream)
    print("\n" + per_document_table(result), file=stream)
    for label, cap in result.capped_at.items():
        if cap is not None:
            print(f"{label} stopped at {cap} tokens (--baseline-max-length): no figures past it", file=stream)
    for label, cost in result.costs.items():
        print(f"{label} (each token from its last T tokens, re-encoded) cost {cost}", file=stream)
    run_dir.start()
    info_meta = meta(
        VERB,
        run_dir,
        args,
        info,
        labels,
        t0,
        documents=result.documents,
        skipped=result.notes,
        length=args.length,
        capped_at=result.capped_at,
        **({"recompute cost": result.costs} if result.costs else {}),
    )
    return write_outputs(VERB, out, {VERB: result}, info_meta, args)
