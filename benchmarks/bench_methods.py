"""StreamingLLM vs LM-Infinite on the embedded model, both through the one kernel: prefill time of
one pass over --length tokens (bounded cache, last logits only) and per-token decoding latency
after it, with the ratio streaming / lambda printed (both run in this process, same text).

    python benchmarks/bench_methods.py [--length 16384] [--steps 16] [--n-local N]

n_local defaults to the training length (lambda: n_global 10; streaming: 4 sinks and n_local
minus 4 recent tokens, so both keep a cache of about the training length).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

import lminf_diag as ld
from lminf_diag.data import load_text, token_window


def measure(model, ids: torch.Tensor, name: str, steps: int, **settings) -> tuple[float, float, int]:
    """(prefill seconds, decoding ms per token, cached keys per layer at the end) under `name`."""
    with torch.no_grad(), ld.method(model, name, **settings):
        cache = DynamicCache()
        t0 = time.perf_counter()
        out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t0
        tok = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1:].argmax(-1)
        per_token = (time.perf_counter() - t0) / max(1, steps) * 1000
    return prefill, per_token, int(cache.layers[0].keys.shape[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--n-local", type=int, default=None, help="window (default: the training length)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = ld.load_model("smollm2-135m")
    n_local = args.n_local or ld.model_info(model).train_len
    text, _ = load_text("chesterton-thursday")
    ids = token_window(tok, text, args.length, repeat=True)
    runs = {
        "lambda": dict(n_global=10, n_local=n_local),
        "streaming": dict(n_global=4, n_local=max(1, n_local - 4)),
    }
    print(f"{args.length} tokens, n_local {n_local}, {args.steps} decoding steps")
    print(f"{'method':>10}{'prefill s':>11}{'decode ms/token':>17}{'cache':>8}")
    got = {}
    for name, settings in runs.items():
        got[name] = measure(model, ids, name, args.steps, **settings)
        p, d, c = got[name]
        print(f"{name:>10}{p:>11.2f}{d:>17.1f}{c:>8}", flush=True)
    (pl, dl, _), (ps, ds, _) = got["lambda"], got["streaming"]
    print(f"ratio streaming / lambda: prefill {ps / pl:.2f}x, decoding {ds / dl:.2f}x")


if __name__ == "__main__":
    main()
