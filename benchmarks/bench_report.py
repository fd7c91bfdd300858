"""Cost of the replicated report against the single-window one, measured in the same run.

Runs `diag report` twice in fresh processes on the same model and length: once with
`--windows 1` (one window, no interval: every verdict inconclusive) and once with `--windows K`
(the default replication), and prints the wall time of each, their ratio, and the ideal ratio K
(the replicated report costs K forward passes per run label). The patched runs share the
baseline's first n_local rows (`capture.prefix`) in both, so the ratio measures replication only.

    python benchmarks/bench_report.py [--model smollm2-135m] [--length 12288] [--windows 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def timed_report(model: str, length: int, windows: int, extra: list[str]) -> float:
    """Wall seconds of one `diag report` in a fresh process, into a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "lminf_diag.cli.main", "report", "--model", model, "--length", str(length),
               "--windows", str(windows), "--out", f"{out}/run", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--length", type=int, default=12288)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("extra", nargs="*", help="more `diag report` arguments (after --)")
    args = p.parse_args()
    one = timed_report(args.model, args.length, 1, args.extra)
    many = timed_report(args.model, args.length, args.windows, args.extra)
    print(f"model {args.model}, {args.length} tokens per window")
    print(f"{'report':<28}{'seconds':>10}")
    print(f"{'single window':<28}{one:>10.1f}")
    print(f"{f'{args.windows} windows (replicated)':<28}{many:>10.1f}")
    print(f"ratio {many / one:.2f}x (ideal {args.windows}x: one forward pass per label and window; "
          "loading and report writing are paid once)")


if __name__ == "__main__":
    main()
