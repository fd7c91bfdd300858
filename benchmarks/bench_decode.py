"""Decoding on the embedded model: per-token latency and KV memory at growing contexts,
LM-Infinite with its bounded cache (n_local 2048, n_global 10) vs the plain model, next to the
ideal latency ratio from bytes read per token (weights plus KV cache).

    python benchmarks/bench_decode.py [--contexts 4096 8192 16384 32768] [--steps 16]
"""

from __future__ import annotations

import argparse

import torch

from lminf_diag import load_model
from lminf_diag.data import load_text, token_window
from lminf_diag.evaluate.decoding import decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--n-local", type=int, default=2048)
    ap.add_argument("--plain-max-context", type=int, default=16384,
                    help="skip the plain model above this context (its prefill is slow); '-' in the table")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    text, _ = load_text("chesterton-thursday")
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(f"weights {weights_mb:.0f} MB; patched: n_global 10, n_local {args.n_local}")
    print(f"{'context':>8}{'plain ms':>10}{'patched ms':>12}{'time x':>8}{'ideal x':>9}"
          f"{'plain KV MB':>13}{'patched KV MB':>15}{'KV x':>7}")
    for n in args.contexts:
        ids = token_window(tok, text, n, repeat=True)
        lam = decode(model, ids, args.steps, patch=dict(n_global=10, n_local=args.n_local), label="lambda")
        kv_l = float(lam.cache_mb[-1])
        if n > args.plain_max_context:
            print(f"{n:>8}{'-':>10}{lam.ms_per_token:>12.1f}{'-':>8}{'-':>9}{'-':>13}{kv_l:>15.1f}{'-':>7}",
                  flush=True)
            continue
        plain = decode(model, ids, args.steps)
        kv_p = float(plain.cache_mb[-1])
        ideal = (weights_mb + kv_l) / (weights_mb + kv_p)
        t = lam.ms_per_token / plain.ms_per_token
        print(f"{n:>8}{plain.ms_per_token:>10.1f}{lam.ms_per_token:>12.1f}{t:>8.2f}{ideal:>9.2f}"
              f"{kv_p:>13.1f}{kv_l:>15.1f}{kv_l / kv_p:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
