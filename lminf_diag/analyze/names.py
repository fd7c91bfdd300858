"""How run labels read in a sentence (one table, shared by every result's findings).

Example:
    >>> display_name("lambda"), display_name("run-a:lambda"), display_name("custom")
    ('LM-Infinite', 'LM-Infinite (run-a)', 'custom')
    >>> display_name("lambda+top5")
    'LM-Infinite + top-5 middle tokens'
    >>> display_name("lambda+dynamic")
    'LM-Infinite with dynamic NTK RoPE scaling'
"""

from __future__ import annotations

NAMES = {
    "baseline": "the baseline",
    "lambda": "LM-Infinite",
    "mask_only": "the Λ-mask alone",
    "cap_only": "the distance cap alone",
    "window": "a plain sliding window",
    "streaming": "StreamingLLM (sinks + window, positions by cache slot)",
    "linear": "linear RoPE interpolation",
    "dynamic": "dynamic NTK RoPE scaling",
    "yarn": "YaRN RoPE scaling",
    "llama3": "Llama 3 RoPE scaling",
    "recompute": "strided re-computation",
}


def display_name(label: str) -> str:
    """How a run label reads in a sentence (unknown labels read as themselves)."""
    prefix, _, base = label.rpartition(":")
    mode, plus, top = base.partition("+top")
    if plus and mode in NAMES and top.isdigit():  # the top-k middle-token run of `diag passkey --top-k`
        name = f"{NAMES[mode]} + top-{int(top)} middle tokens"
    elif base in NAMES:
        name = NAMES[base]
    elif base.partition("+")[0] in NAMES and base.partition("+")[2] in NAMES:  # lambda+dynamic
        first, _, second = base.partition("+")
        name = f"{NAMES[first]} with {NAMES[second]}"
    else:
        return label
    return f"{name} ({prefix})" if prefix else name


def sentence_start(text: str) -> str:
    """The text with its first letter capitalised.

    >>> sentence_start("the baseline")
    'The baseline'
    """
    return text[:1].upper() + text[1:]
