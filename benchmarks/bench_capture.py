"""Cost of capturing every statistic for all 30 layers of the embedded model, as ratios to a
plain SDPA forward measured in the same run (each in a fresh process), plus the memory that
`output_attentions=True` would need at the same length.

    python benchmarks/bench_capture.py [--length 8192] [--stride 1]
"""

from __future__ import annotations

import argparse

from _measure import in_subprocess

CODE = """
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
            from lminf_diag import capture
            with capture(model, stride={stride}) as rec:
                model.base_model(input_ids=ids)
            rec.trace
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--stride", type=int, default=1, help="query-row stride of the statistics")
    args = ap.parse_args()
    n = args.length
    plain = in_subprocess(CODE.format(n=n, which="plain", stride=args.stride))
    cap = in_subprocess(CODE.format(n=n, which="capture", stride=args.stride))
    eager_gb = 30 * 9 * n * n * 4 / 1e9  # one fp32 (heads, n, n) attention tensor per layer
    print(f"length {n}, stride {args.stride}, all 30 layers, every statistic")
    print(f"plain SDPA forward   {plain['seconds']:8.1f} s   peak +{plain['peak_mb']:8.0f} MB")
    print(f"capture forward      {cap['seconds']:8.1f} s   peak +{cap['peak_mb']:8.0f} MB")
    print(f"ratios               time {cap['seconds'] / plain['seconds']:.2f}x   "
          f"memory {cap['peak_mb'] / max(plain['peak_mb'], 1e-9):.2f}x")
    print(f"output_attentions=True would hold {eager_gb:.1f} GB of attention weights")


if __name__ == "__main__":
    main()
