"""Cost of capturing every statistic for all 30 layers of the embedded model, as ratios to a
plain SDPA forward measured in the same run (each in a fresh process), plus the memory that
`output_attentions=True` would need at the same length.

Plain and capture runs alternate `--repeats` times; the time ratio is taken between the fastest
run of each (on a shared machine noise only ever adds time), the median ratio is shown next to
it. Peak memory comes from one more pair of runs with glibc returning freed blocks to the
system (see `_measure.LIVE_MEMORY_ENV`), so that it measures memory in use rather than what the
allocator kept; the peak with the default allocator is printed too.

    python benchmarks/bench_capture.py [--length 8192] [--stride 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

from _measure import LIVE_MEMORY_ENV, in_subprocess

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
            from lminf_diag import record
            with record(model, stride={stride}) as rec:
                model.base_model(input_ids=ids)
            rec.trace
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--stride", type=int, default=1, help="query-row stride of the statistics")
    ap.add_argument("--repeats", type=int, default=3, help="alternating plain/capture runs")
    args = ap.parse_args()
    n = args.length
    plain_code = CODE.format(n=n, which="plain", stride=args.stride)
    cap_code = CODE.format(n=n, which="capture", stride=args.stride)
    plain, cap = [], []
    for i in range(args.repeats):
        plain.append(in_subprocess(plain_code))
        cap.append(in_subprocess(cap_code))
        print(f"run {i + 1}/{args.repeats}: plain {plain[-1]['seconds']:.1f} s, capture {cap[-1]['seconds']:.1f} s",
              flush=True)
    live_plain = in_subprocess(plain_code, LIVE_MEMORY_ENV)
    live_cap = in_subprocess(cap_code, LIVE_MEMORY_ENV)
    tp, tc = min(r["seconds"] for r in plain), min(r["seconds"] for r in cap)
    median = statistics.median(c["seconds"] / p["seconds"] for p, c in zip(plain, cap, strict=True))
    eager_gb = 30 * 9 * n * n * 4 / 1e9  # one fp32 (heads, n, n) attention tensor per layer
    print(f"length {n}, stride {args.stride}, all 30 layers, every statistic, {args.repeats} runs each")
    print(f"plain SDPA forward   {tp:8.1f} s   peak +{live_plain['peak_mb']:6.0f} MB in use "
          f"(+{min(r['peak_mb'] for r in plain):.0f} MB default allocator)")
    print(f"capture forward      {tc:8.1f} s   peak +{live_cap['peak_mb']:6.0f} MB in use "
          f"(+{min(r['peak_mb'] for r in cap):.0f} MB default allocator)")
    print(f"ratios               time {tc / tp:.2f}x (median of pairs {median:.2f}x)   "
          f"memory {live_cap['peak_mb'] / max(live_plain['peak_mb'], 1e-9):.2f}x")
    print(f"output_attentions=True would hold {eager_gb:.1f} GB of attention weights")


if __name__ == "__main__":
    main()
