"""What the evaluation verbs (`ppl`, `passkey`, the extra sections) share: the patch settings as the
runners take them, and the report's metadata table.

Example:
    >>> import argparse
    >>> from lminf_diag.cli.evaluation import patch_args
    >>> patch_args(argparse.Namespace(n_global=4, n_local=None, limit=None))
    {'n_global': 4, 'n_local': None, 'limit': None}
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def patch_args(args: argparse.Namespace) -> dict[str, Any]:
    """The patch settings as the runners take them (and as a run folder records them)."""
    return {"n_global": args.n_global, "n_local": args.n_local, "limit": args.limit}


def meta(
    verb: str, run: Any, args: argparse.Namespace, info: Any, labels: list[str], t0: float, **extra: Any
) -> dict[str, Any]:
    """The report's metadata table: model, runs, patch settings, timings, versions."""
    return {
        "command": verb,
        "model": args.model,
        "train_len": info.train_len,
        "labels": labels,
        "n_global": args.n_global,
        "n_local": args.n_local or info.train_len,
        "limit": args.limit or args.n_local or info.train_len,
        **extra,
        "settings": run.info.get("args", {}),
        "run folder": str(run.path),
        "started": run.info.get("created"),
        "git": run.info.get("git") or "-",
        "seconds per step": run.seconds,
        "seconds for this command": round(time.perf_counter() - t0, 2),
        "device": args.device or "cpu",
        "versions": run.info.get("versions", {}),
    }


def method_settings(args: argparse.Namespace) -> Any:
    """The attention settings of every run as one `MethodSettings` (--n-global, --n-local, --limit and,
    where the verb has them, the --top-k options).

    >>> ns = argparse.Namespace(n_global=4, n_local=64, limit=None, top_k=2)
    >>> method_settings(ns).top()
    {'top_k': 2, 'top_k_from_layer': 4, 'top_k_distance': None}
    """
    from lminf_diag.attention.method_spec import MethodSettings
    from lminf_diag.cli.passkey_options import top_k_args

    return MethodSettings(**patch_args(args), **top_k_args(args))
