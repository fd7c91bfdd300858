"""Streaming on the embedded model: tokens per second at two window sizes, next to the ideal ratio
from counting attended pairs, the projected time for a million tokens, and peak RSS at two stream
lengths (flat memory means a ratio near 1).

    python benchmarks/bench_stream.py [--tokens 20000] [--windows 8192 2048] [--chunk 2048]

Each measurement runs in a fresh process (`_measure.in_subprocess`) with the allocator settings
`diag` uses (freed memory kept for reuse, `lminf_diag.util.allocator`); `--live-memory` returns
every freed block over 64 KB at once instead, so the peak RSS follows the memory in use, at the
cost of page faults that slow the stream. Attended pairs per token:
the patched attention reads min(position, n_global + n_local) keys, plus the fixed per-token work
of the MLPs and projections, here counted as `dense_pairs` key-equivalents (an estimate: the
ratio is only a guide).
"""

from __future__ import annotations

import argparse

from _measure import LIVE_MEMORY_ENV, in_subprocess

CODE = """
import numpy as np, torch
from lminf_diag import load_model
from lminf_diag.util.allocator import keep_freed_memory
if not {live}:
    keep_freed_memory()
from lminf_diag.evaluate.stream import stream_ids, stream_loss
def setup():
    model, tok = load_model("smollm2-135m")
    return model, stream_ids(tok, tokens={tokens}, repeat=True)
def run(state):
    model, ids = state
    stream_loss(model, ids, "lambda", {chunk}, n_global=10, n_local={n_local})
"""


def attended_pairs(n: int, n_global: int, n_local: int) -> float:
    """Keys read by all queries of a stream of n tokens under the Λ (causal, at most G + W each)."""
    bound = n_global + n_local
    full = min(n, bound)
    return full * (full + 1) / 2 + max(0, n - bound) * bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--windows", type=int, nargs="+", default=[8192, 2048])
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--dense-pairs", type=float, default=3000.0,
                    help="per-token work outside attention, in attended-key equivalents (estimate)")
    ap.add_argument("--live-memory", action="store_true", help="peak RSS of the memory in use (slower runs)")
    args = ap.parse_args()
    env = LIVE_MEMORY_ENV if args.live_memory else {}
    rows = []
    for w in args.windows:
        r = in_subprocess(CODE.format(tokens=args.tokens, chunk=args.chunk, n_local=w, live=args.live_memory), env)
        pairs = attended_pairs(args.tokens, 10, w) + args.dense_pairs * args.tokens
        rows.append((w, args.tokens / r["seconds"], pairs, r["peak_mb"]))
    base_w, base_tps, base_pairs, _ = rows[0]
    memory = "memory in use (MALLOC_MMAP_THRESHOLD_=65536)" if args.live_memory else "allocator as diag sets it"
    print(f"stream of {args.tokens:,} tokens, chunk {args.chunk}, n_global 10, {memory}")
    print(f"{'n_local':>8}{'tokens/s':>10}{'speed x':>9}{'ideal x':>9}{'1M tokens':>12}{'peak RSS MB':>13}")
    for w, tps, pairs, mb in rows:
        hours = 1e6 / tps / 3600
        print(f"{w:>8}{tps:>10.0f}{tps / base_tps:>9.2f}{base_pairs / pairs:>9.2f}{hours:>10.1f} h{mb:>13.0f}")
    w = args.windows[-1]
    small = in_subprocess(CODE.format(tokens=args.tokens // 2, chunk=args.chunk, n_local=w, live=args.live_memory),
                          env)
    print(f"peak RSS at n_local {w}: {small['peak_mb']:.0f} MB for {args.tokens // 2:,} tokens, "
          f"{rows[-1][3]:.0f} MB for {args.tokens:,} (ratio {rows[-1][3] / max(small['peak_mb'], 1e-9):.2f}; "
          "flat memory: about 1)")


if __name__ == "__main__":
    main()
