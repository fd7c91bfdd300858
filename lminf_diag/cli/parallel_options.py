"""--workers and --ray, shared by every verb whose work splits into independent units (windows,
sweep cells, lab units): the units run in N local processes or as Ray tasks (`lminf_diag.parallel`),
and the run folder, resume and outputs are those of a serial run.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_parallel_options(p, "windows")
    >>> p.parse_args(["--workers", "2"]).workers
    2
"""

from __future__ import annotations

import argparse


def add_parallel_options(p: argparse.ArgumentParser, units: str) -> None:
    """The "parallel" option group; `units` names what runs in parallel ("windows", "cells", ...)."""
    from lminf_diag.cli.options import bounded_int

    g = p.add_argument_group("parallel")
    g.add_argument("--workers", type=bounded_int(1, "worker processes"), default=1,
                   help=f"run the {units} in N local processes, the cores shared among them (default 1: "
                   "serial); same files, same resume")
    g.add_argument("--ray", default=None, metavar="ADDRESS",
                   help=f"run the {units} as Ray tasks on this cluster ('auto', 'local' or ray://host:port; "
                   "needs the optional 'ray' extra), one GPU per task where the cluster has GPUs")
