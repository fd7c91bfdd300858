"""Where a passkey needle lies relative to the Λ of an LM-Infinite run (pure arithmetic on token indices).

The row that answers is the prompt's last query row, i = n - 1 (n = prompt tokens, BOS
included). Under the Λ-mask it attends key j when i - j < n_local (the window: j >= n - n_local)
or when j < n_global (the global tokens). A needle spanning tokens [start, end) is *inside the
Λ* when it lies ENTIRELY within one of the two:

    inside window   start >= n - n_local          (every needle token within the last n_local)
    inside global   end   <= n_global             (every needle token among the first n_global)

A needle straddling the window's edge is outside. Its *distance* is n - start, the tokens from
the needle's first token to the end of the prompt (both included), so the needle is in the
window exactly when distance <= n_local.

This is geometry, the reference a retrieval accuracy is read against, not a bound: through the
layers a token inside the window can carry what earlier layers read from outside it, and the
decoding steps after the first answer token move the window by one token each.

Example:
    >>> needle_inside(90, 95, n_tokens=100, n_local=10, n_global=4)      # in the last 10 tokens
    True
    >>> needle_inside(89, 95, n_tokens=100, n_local=10, n_global=4)      # straddles the window edge
    False
    >>> needle_inside(1, 4, n_tokens=100, n_local=10, n_global=4)        # among the first 4 tokens
    True
    >>> needle_distance(90, 100)
    10
"""

from __future__ import annotations

from lminf_diag.errors import InvalidArgumentError


def needle_distance(needle_start: int, n_tokens: int) -> int:
    """Tokens from the needle's first token to the end of the prompt, both included (n - start).

    >>> needle_distance(0, 64), needle_distance(63, 64)
    (64, 1)
    """
    if not 0 <= needle_start < n_tokens:
        raise InvalidArgumentError(
            f"needle_start must be a token index of the prompt (0..{n_tokens - 1}), got {needle_start}."
        )
    return int(n_tokens - needle_start)


def needle_inside(needle_start: int, needle_end: int, n_tokens: int, n_local: int, n_global: int) -> bool:
    """True when tokens [needle_start, needle_end) lie entirely in the window of the last query row
    (the last n_local tokens) or entirely among the first n_global tokens (module docstring).

    >>> needle_inside(0, 5, n_tokens=100, n_local=200, n_global=0)   # the whole prompt fits the window
    True
    >>> needle_inside(3, 8, n_tokens=100, n_local=10, n_global=4)    # past the global tokens, not in window
    False
    """
    if not 0 <= needle_start < needle_end <= n_tokens:
        raise InvalidArgumentError(
            f"the needle span [{needle_start}, {needle_end}) must be a non-empty span of the {n_tokens} "
            "prompt tokens."
        )
    if n_local < 1 or n_global < 0:
        raise InvalidArgumentError(f"n_local must be >= 1 and n_global >= 0; got {n_local} and {n_global}.")
    in_window = needle_start >= n_tokens - n_local
    in_global = needle_end <= n_global
    return bool(in_window or in_global)


def run_lambda(label: str, n_global: int, n_local: int) -> tuple[int, int] | None:
    """(n_global, n_local) of the Λ that a run label attends through, or None for the baseline.

    "window" has no global tokens; "lambda", "mask_only", the top-k run ("lambda+topK") and
    "cap_only" use the settings' Λ. `cap_only` attends every key (those outside the Λ at the
    capped distance): for it the flag marks the keys it sees at their true distance or as global.

    >>> run_lambda("baseline", 10, 64), run_lambda("window", 10, 64), run_lambda("lambda+top5", 10, 64)
    (None, (0, 64), (10, 64))
    >>> run_lambda("dynamic", 10, 64), run_lambda("lambda+yarn", 10, 64), run_lambda("streaming", 4, 60)
    (None, (10, 64), (4, 60))
    """
    from lminf_diag.attention.method_spec import split_name

    base = label.split("+top")[0] if "+top" in label else label
    attn, _ = split_name(base) if base != "baseline" else (None, None)
    if attn is None:  # the baseline, or a RoPE scaling alone: every key attended
        return None
    return (0, int(n_local)) if attn == "window" else (int(n_global), int(n_local))


__all__ = ["needle_distance", "needle_inside", "run_lambda"]
