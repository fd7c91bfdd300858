"""Long captures: wall time and peak resident memory of a patched-only capture of every statistic
at 16384 and 131072 tokens on the embedded model, each in a fresh process, with the ratio of the
long one to the short one (flat memory: a ratio near 1; the target is at most 1.5).

    python benchmarks/bench_long_capture.py [--lengths 16384 131072] [--verb report] [--stride auto]

Each length runs ``diag <verb> --model smollm2-135m --text all-books --length L --windows 1
--patched-only`` (n_local = the training length 8192, auto stride; windows past 32768 tokens are
read in chunks with the bounded cache). The runs are those a user starts, allocator settings
included (`diag` keeps freed memory for reuse: `lminf_diag.util.allocator`). The peak RSS is the
whole process's (model, text, capture, analysis, report), read from the kernel's accounting of the
finished child (`os.wait4`). `--live-memory` instead returns every freed block over 64 KB to the
system at once (`MALLOC_MMAP_THRESHOLD_=65536`), so the peak RSS follows the memory in use, at the
cost of page faults that slow the run (about 15% at 128k tokens). Progress lines of the runs pass
through on stderr.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _measure import LIVE_MEMORY_ENV


def run_once(verb: str, model: str, length: int, stride: str, out: str, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one CLI run in a fresh process."""
    cmd = [sys.executable, "-m", "lminf_diag.cli.main", verb, "--model", model, "--text", "all-books",
           "--length", str(length), "--windows", "1", "--patched-only", "--stride", stride, "--out", out,
           "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 131072])
    ap.add_argument("--verb", default="report", choices=("report", "entropy", "logits", "pca"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--stride", default="auto")
    ap.add_argument("--live-memory", action="store_true", help="peak RSS of the memory in use (slower runs)")
    args = ap.parse_args()
    env = LIVE_MEMORY_ENV if args.live_memory else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            seconds, mb, code = run_once(args.verb, args.model, length, args.stride, f"{tmp}/{length}", env)
            if code != 0:
                sys.exit(f"diag {args.verb} at {length} tokens failed with exit code {code}")
            rows.append((length, seconds, mb))
    base_mb = rows[0][2]
    memory = "memory in use (MALLOC_MMAP_THRESHOLD_=65536)" if args.live_memory else "allocator as diag sets it"
    print(f"\ndiag {args.verb} --patched-only, {args.model}, one window of all-books, stride {args.stride}, {memory}")
    print(f"{'tokens':>8}{'wall':>12}{'tokens/s':>10}{'peak RSS MB':>13}{'RSS x':>8}")
    for length, seconds, mb in rows:
        print(f"{length:>8}{seconds / 60:>10.1f} m{length / seconds:>10.0f}{mb:>13.0f}{mb / base_mb:>8.2f}")


if __name__ == "__main__":
    main()
