"""Run one measurement in a fresh process and report (seconds, peak extra RSS in MB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# glibc keeps freed blocks below its (adaptive) mmap threshold in the heap, so the peak RSS of
# a run depends on allocation order as much as on what was alive: identical runs varied by 30%.
# With this setting every block over 64 KB is returned to the system when freed, and the peak
# RSS follows the memory actually in use.
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def in_subprocess(code: str, env: dict | None = None) -> dict:
    """`code` must define `setup()` (untimed) and `run(state)` (timed); returns its timings.
    `env`: extra environment variables for the child process."""
    driver = f"""
import json, resource, time, gc
{code}
state = setup()
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter(); run(state); t1 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": t1 - t0, "peak_mb": (peak - base) / 1024}}))
"""
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True, env=full_env)
    return json.loads(out.stdout.strip().splitlines()[-1])
