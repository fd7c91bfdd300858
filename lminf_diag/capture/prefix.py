"""Shared prefix: under the patch, query rows before n_local are exactly the baseline's.

For every mode, a row at position p < n_local attends every earlier key at its true distance,
as the baseline does; so do all the layers below it, so the keys and values of the first n_local
tokens are the baseline's too. A patched capture can therefore start from the baseline's KV
cache of those tokens and run only the rest of the window; its trace takes the baseline's
statistics, hidden states and losses for the rows before. `tests/test_prefix.py` checks the
result against a full patched pass.

Example:
    >>> shared_length({"mode": "lambda", "n_local": 8192, "n_global": 10}, 12288)
    8192
    >>> shared_length({"mode": "lambda", "n_local": 8192, "n_global": 10, "top_k": 5}, 12288)
    0
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from .trace import Trace

STAT_FIELDS = ("entropy", "max_logit", "lse", "sink_mass", "dist_mass")


@dataclass
class Prefix:
    """The baseline's KV cache of its first `length` tokens and its trace of the whole window."""

    length: int
    cache: Any  # transformers DynamicCache holding `length` tokens
    trace: Trace

    def fresh_cache(self) -> Any:
        """A copy of the cache (a forward pass appends to the cache it is given)."""
        return copy.deepcopy(self.cache)


def shared_length(patch: dict[str, Any] | None, n_tokens: int) -> int:
    """How many leading rows a patched run shares with the baseline (0: none worth sharing)."""
    if not patch or patch.get("top_k"):
        return 0
    n_local = patch.get("n_local")
    if not n_local or int(n_local) >= n_tokens - 1:
        return 0
    return int(n_local)


def merge_prefix(trace: Trace, prefix: Trace, length: int) -> Trace:
    """Fill `trace` (captured from position `length` on) with `prefix`'s rows before `length`."""
    if not np.array_equal(trace.positions, prefix.positions) or not np.array_equal(
        trace.profile_rows, prefix.profile_rows
    ):
        raise ValueError("the shared prefix was captured with other rows; capture the full window instead")
    early = trace.positions < length
    for name in STAT_FIELDS:
        getattr(trace, name)[:, :, early] = getattr(prefix, name)[:, :, early]
    rows = trace.profile_rows < length
    trace.logit_profile[:, :, rows] = prefix.logit_profile[:, :, rows]
    trace.profile_band[:, :, rows] = prefix.profile_band[:, :, rows]
    if trace.hidden.size and prefix.hidden.size:  # the prefix's states may stop early (a shorter baseline)
        hid = trace.hidden_positions < length
        idx = np.searchsorted(prefix.hidden_positions, trace.hidden_positions[hid])
        found = idx < len(prefix.hidden_positions)
        found[found] = prefix.hidden_positions[idx[found]] == trace.hidden_positions[hid][found]
        if found.all():
            trace.hidden[:, hid] = prefix.hidden[:, idx]
    return trace
