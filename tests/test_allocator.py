"""Freed memory kept for reuse: tensors allocated again after a free do not fault their pages in
again (counted by the kernel, in fresh processes), and `diag` sets it up at start."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHURN = """
import ctypes, resource, sys, torch
from lminf_diag.util import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
else:  # glibc's documented defaults, before its dynamic adjustment: 128 KiB each
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(allocator.M_MMAP_THRESHOLD, 128 * 1024) and libc.mallopt(allocator.M_TRIM_THRESHOLD, 128 * 1024)
def churn():  # two 24 MB blocks, freed together
    a, b = torch.ones(6_000_000), torch.ones(6_000_000)
    return float(a[0] + b[0])
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    pages = 10 * 2 * 6_000_000 * 4 // 4096  # what ten rounds touch
    default, kept = _faults("default"), _faults("keep")
    assert default > 0.9 * pages  # the defaults return the blocks and fault them in again
    assert kept < 0.4 * pages


def test_the_cli_keeps_freed_memory(monkeypatch):
    from lminf_diag.cli import main as cli_main
    from lminf_diag.util import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(cli_main, "verb_module", lambda name: _Verb())
    assert cli_main.main(["entropy", "--length", "64"]) == 0
    assert calls == [1]


class _Verb:
    """A stand-in verb module: registers `entropy` and does nothing."""

    @staticmethod
    def add_parser(sub):
        p = sub.add_parser("entropy")
        p.add_argument("--length", type=int)
        return p

    @staticmethod
    def run(args):
        return 0
