"""One colour per run label, the same in every figure, and the order labels take in legends.

Every figure that colours a line, a marker or a band by run label takes its colour from
`label_color` (or `label_colors` for several), so "lambda" is the same orange everywhere and the
baseline the same blue. Labels the table does not know (a user's own label) take the spare
colours by a stable hash of the label, so a label keeps its colour across figures and sessions.

The table is read on the label's mode: `"run-a:lambda"`, `"lambda+top5"`, `"lambda (shuffled)"`
and `"lab-rope 1024:lambda"` are coloured as "lambda". Heat maps never use these colours: they
use `SEQUENTIAL` (a sequential scale), so no heat map reads as a label.

Example:
    >>> label_color("lambda"), label_color("run-a:lambda") == label_color("lambda")
    ('#ff7f0e', True)
    >>> legend_order(["window", "lambda", "baseline", "mine"])
    ['baseline', 'lambda', 'window', 'mine']
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

# label -> colour, in legend order (baseline first, then the paper's method, its ablations, rivals)
LABEL_COLORS: dict[str, str] = {
    "baseline": "#1f77b4",  # blue
    "lambda": "#ff7f0e",  # orange
    "mask_only": "#2ca02c",  # green
    "cap_only": "#d62728",  # red
    "window": "#9467bd",  # purple
    "topk": "#8c564b",  # brown
    "streaming": "#e377c2",  # pink
    "linear": "#7f7f7f",  # grey
    "dynamic": "#bcbd22",  # olive
    "yarn": "#17becf",  # cyan
    "llama3": "#393b79",  # dark indigo
    "recompute": "#000000",  # black: the in-distribution reference
}
# the lab's models (coloured by model where a figure overlays several models)
MODEL_COLORS: dict[str, str] = {
    "lab-rope": "#1f77b4",
    "lab-alibi": "#d62728",
    "lab-partial": "#2ca02c",
    "lab-nope": "#9467bd",
}
SPARE_COLORS = ("#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")
SEQUENTIAL = "Viridis"  # the one colour scale of heat maps and position-coloured scatter plots
BAND_OPACITY = 0.15  # interval fills: light, drawn before (under) their line


def label_mode(label: str) -> str:
    """The mode a label names: the part after the last ':' without ' (shuffled)' or a '+top<k>' tail.

    >>> label_mode("lab-rope 1024:mask_only"), label_mode("lambda+top5"), label_mode("baseline (shuffled)")
    ('mask_only', 'topk', 'baseline')
    """
    base = label.rpartition(":")[2].strip()
    base = base.removesuffix(" (shuffled)").strip()
    mode, plus, top = base.partition("+top")
    if plus and top.isdigit():
        return "topk"
    return mode


def label_color(label: str) -> str:
    """The fixed colour of one run label (see the module docstring).

    >>> label_color("baseline"), label_color("yarn")
    ('#1f77b4', '#17becf')
    >>> label_color("my-run") == label_color("my-run")
    True
    """
    mode = label_mode(label)
    if mode in LABEL_COLORS:
        return LABEL_COLORS[mode]
    if label in MODEL_COLORS:
        return MODEL_COLORS[label]
    return SPARE_COLORS[zlib.crc32(mode.encode()) % len(SPARE_COLORS)]


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """label -> colour for several labels, in the order given.

    >>> label_colors(["baseline", "lambda"])
    {'baseline': '#1f77b4', 'lambda': '#ff7f0e'}
    """
    return {lab: label_color(lab) for lab in labels}


def legend_order(labels: Iterable[str]) -> list[str]:
    """Labels in the table's order (known modes first, by table position), unknown ones after, stably."""
    rank = {mode: i for i, mode in enumerate(LABEL_COLORS)}
    labels = list(dict.fromkeys(labels))
    return sorted(labels, key=lambda lab: (rank.get(label_mode(lab), len(rank)), labels.index(lab)))


def rgba(hex_color: str, alpha: float = BAND_OPACITY) -> str:
    """'#1f77b4', 0.2 -> 'rgba(31,119,180,0.2)'.

    >>> rgba("#1f77b4", 0.2)
    'rgba(31,119,180,0.2)'
    """
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


__all__ = [
    "BAND_OPACITY",
    "LABEL_COLORS",
    "MODEL_COLORS",
    "SEQUENTIAL",
    "label_color",
    "label_colors",
    "label_mode",
    "legend_order",
    "rgba",
]
