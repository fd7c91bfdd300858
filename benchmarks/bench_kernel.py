"""Patched-to-plain-SDPA time and peak-memory ratios at the embedded model's attention shapes.

Kernel level: 9 query heads, 3 KV heads, head_dim 64, fp32, at 16k and 32k tokens with
n_local 8192, n_global 10 (plain SDPA is the baseline, measured in the same run). Next to each
ratio, the ideal one from counting attended (query, key) pairs. Optionally a full-model forward
of the embedded model at 16k (--model), patched vs plain.

    python benchmarks/bench_kernel.py [--lengths 16384 32768] [--model]
"""

from __future__ import annotations

import argparse

from _measure import in_subprocess

KERNEL = """
import torch
torch.manual_seed(0)
N, W, G = {n}, 8192, 10
def setup():
    q = torch.randn(1, 9, N, 64); k = torch.randn(1, 3, N, 64); v = torch.randn(1, 3, N, 64)
    from lminf_diag.attention.spec import LambdaSpec
    from lminf_diag.attention.rotary import RotaryOps
    inv = 1.0 / (1e5 ** (torch.arange(0, 64, 2).float() / 64))
    return q, k, v, LambdaSpec.resolve(8192, G).plan(), RotaryOps.from_inv_freq(inv)
def run(s):
    q, k, v, plan, rope = s
    with torch.no_grad():
        if "{which}" == "plain":
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            from lminf_diag.attention.kernel import attend
            attend(q, k, v, plan, scaling=0.125, rope=rope)
"""

MODEL = """
import torch
def setup():
    from lminf_diag import load_model
    from lminf_diag.data import load_text, token_window
    model, tok = load_model("smollm2-135m")
    text, _ = load_text("chesterton-thursday")
    return model, token_window(tok, text, {n})
def run(s):
    model, ids = s
    with torch.no_grad():
        if "{which}" == "plain":
            model.base_model(input_ids=ids)
        else:
            from lminf_diag import lm_infinite
            with lm_infinite(model, n_global=10):
                model.base_model(input_ids=ids)
"""


def pairs(n: int, w: int = 8192, g: int = 10) -> tuple[int, int]:
    full = n * (n + 1) // 2
    local = sum(min(i + 1, w) for i in range(n))
    far = sum(min(g, max(0, i - w + 1)) for i in range(n))
    return full, local + far


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768])
    ap.add_argument("--model", action="store_true", help="also time a full embedded-model forward at 16k")
    args = ap.parse_args()
    print(f"{'what':<28}{'plain s':>9}{'patched s':>11}{'time x':>8}{'ideal x':>9}{'mem x':>8}{'vs ideal':>10}")
    rows = [(f"kernel n={n}", KERNEL, n) for n in args.lengths]
    if args.model:
        rows.append(("model forward n=16384", MODEL, 16384))
    for name, code, n in rows:
        plain = in_subprocess(code.format(n=n, which="plain"))
        patched = in_subprocess(code.format(n=n, which="patched"))
        full, lam = pairs(n)
        t = patched["seconds"] / plain["seconds"]
        ideal = lam / full
        mem = patched["peak_mb"] / max(plain["peak_mb"], 1e-9)
        print(f"{name:<28}{plain['seconds']:>9.2f}{patched['seconds']:>11.2f}{t:>8.2f}{ideal:>9.2f}"
              f"{mem:>8.2f}{t / ideal:>10.2f}")


if __name__ == "__main__":
    main()
