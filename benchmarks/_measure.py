"""Run one measurement in a fresh process and report (seconds, peak extra RSS in MB)."""

from __future__ import annotations

import json
import subprocess
import sys


def in_subprocess(code: str) -> dict:
    """`code` must define `setup()` (untimed) and `run(state)` (timed); returns its timings."""
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
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
