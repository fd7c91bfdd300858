"""``diag stream``: the per-token loss of a very long text, chunk by chunk, in flat memory.

The text (every bundled book joined by default, or --text / --text-file; --repeat cycles it up to
--tokens) goes through the model under --method with the bounded KV cache, --chunk tokens at a
time. Tokens per second and the time left are printed as it goes. The loss is written to the run
folder at each checkpoint next to a snapshot of the cache, so the same command resumes an
interrupted stream exactly. At the end: the loss per log-spaced bin to the end of the stream
against the in-range reference (T/2..T), `summary.json` and `stream.html`.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["stream", "--tokens", "1000000", "--repeat", "--stats-every", "65536"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import fmt_seconds

VERB = "stream"
SUMMARY = "per-token loss over a text of any length (a million tokens), chunked, in flat memory"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        SUMMARY,
        "Read a long text through the model under --method (LM-Infinite by default) in chunks, with\n"
        "the bounded KV cache (first n_global + last n_local entries per layer, true positions):\n"
        "memory stays flat whatever the length; only the per-token loss grows (4 MB per million\n"
        "tokens, written to the run folder). Prints tokens/s and the time left. Every --stats-every\n"
        "tokens, the attention entropy and max logit of one chunk are recorded. Attention outputs\n"
        "are checked for NaN/inf (located by layer and position). The same command resumes.\n"
        "Writes <out>/stream.html and <out>/summary.json.",
        [
            "diag stream --tokens 1000000 --repeat              # the bundled books, cycled to 1M tokens",
            "diag stream --text-file my_book.txt --n-local 2048 --stats-every 65536",
            "diag stream --tokens 20000 --chunk 1024 --out runs/stream-short",
        ],
    )
    options.add_model_options(p)
    g = p.add_argument_group("text")
    g.add_argument("--text", default=None,
                   help="one bundled book (`diag books`) or a text file (default: every bundled book joined)")
    g.add_argument("--text-file", default=None, help="a UTF-8 text file to stream")
    g.add_argument("--tokens", type=options.bounded_int(2, "tokens to stream"), default=None,
                   help="tokens to stream (default: the whole text)")
    g.add_argument("--repeat", action="store_true", help="cycle the text to reach --tokens")
    s = p.add_argument_group("stream")
    s.add_argument("--method", default="lambda",
                   help="attention method (default lambda, LM-Infinite; also mask_only, window, and the methods "
                   "of `lminf_diag.patch.method` where installed)")
    s.add_argument("--chunk", type=options.bounded_int(1, "tokens per forward pass"), default=2048,
                   help="tokens per forward pass (default 2048)")
    s.add_argument("--n-global", type=options.bounded_int(0, "global tokens"), default=None,
                   help="global tokens at the start (default: the method's, 10; streaming 4 sinks)")
    s.add_argument("--n-local", type=options.bounded_int(1, "the local window"), default=None,
                   help="local window in tokens (default: the training length)")
    s.add_argument("--limit", type=options.bounded_int(1, "the distance cap"), default=None,
                   help="distance cap (default: --n-local)")
    s.add_argument("--stats-every", type=options.bounded_int(0, "tokens between statistics samples"), default=0,
                   help="record attention entropy and max logit of one chunk every N tokens (default 0: off)")
    s.add_argument("--checkpoint-seconds", type=options.bounded_int(1, "seconds between checkpoints"),
                   default=120, help="write the loss and a cache snapshot this often (default 120)")
    options.add_output_options(p)
    return p


class Ticker:
    """Prints tokens/s and the time left, at most every `every` seconds (and at the end)."""

    def __init__(self, stream, every: float = 10.0):
        self.stream, self.every, self.last = stream, every, float("-inf")

    def __call__(self, p) -> None:
        if p.done < p.total and p.seconds - self.last < self.every:
            return
        self.last = p.seconds
        eta = "done" if p.done >= p.total else f"about {fmt_seconds(p.eta_seconds)} left"
        print(f"streamed {p.done:,} / {p.total:,} tokens, {p.tokens_per_second:,.0f} tokens/s, {eta}",
              file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the verb; returns the exit code."""
    from lminf_diag.cli.loading import load
    from lminf_diag.cli.pipeline import write_outputs
    from lminf_diag.evaluate.stream import stream_ids, stream_loss
    from lminf_diag.runs import RunDir

    t0 = time.perf_counter()
    human = options.human(args)
    source = args.text_file or args.text or "bundled books"
    out = Path(args.out) if args.out else options.default_out(VERB, args.model, args.tokens or "all")
    settings = {"task": VERB, "model": args.model, "text": source, "tokens": args.tokens, "repeat": args.repeat,
                "dtype": args.dtype, "train_len": args.train_len, "method": args.method, "chunk": args.chunk,
                "n_global": args.n_global, "n_local": args.n_local, "limit": args.limit,
                "stats_every": args.stats_every}
    run_dir = RunDir(out, settings, overwrite=args.overwrite)
    args.resume_hint = f"the loss so far and a cache snapshot are kept in {out}/stream"
    model, tok, info = load(args)
    ids = stream_ids(tok, args.text, args.tokens, repeat=args.repeat, text_file=args.text_file)
    print(f"streaming {ids.size:,} tokens of {source} under {args.method}, {args.chunk} per chunk", file=human)
    run_dir.start()
    result = stream_loss(
        model, ids, args.method, args.chunk, n_global=args.n_global, n_local=args.n_local, limit=args.limit,
        train_len=info.train_len, stats_every=args.stats_every, folder=run_dir.path / "stream",
        checkpoint_seconds=args.checkpoint_seconds, on_chunk=Ticker(sys.stderr), text=source,
    )
    rate = result.tokens_per_second
    print(f"{result.streamed:,} tokens streamed in {fmt_seconds(result.seconds)} ({rate:,.0f} tokens/s); "
          f"KV cache at most {result.peak_cache_entries:,} entries per layer (bound {result.cache_bound:,})",
          file=human)
    run_dir.mark_done("stream", result.seconds, tokens=len(result))
    meta = {
        "command": VERB, "model": args.model, "text": source, "length": len(result), "train_len": info.train_len,
        "labels": [args.method], **result.settings, "tokens per second": round(rate, 1),
        "KV entries per layer (peak, bound)": [result.peak_cache_entries, result.cache_bound],
        "settings": run_dir.info.get("args", {}), "run folder": str(run_dir.path),
        "started": run_dir.info.get("created"), "git": run_dir.info.get("git") or "-",
        "seconds for this command": round(time.perf_counter() - t0, 2), "device": args.device or "cpu",
        "versions": run_dir.info.get("versions", {}),
    }
    return write_outputs(VERB, out, {VERB: result}, meta, args)
