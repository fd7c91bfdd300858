"""``diag models``: the embedded models and the model families LM-Infinite applies to.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["models", "--json"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lminf_diag.cli import options

VERB = "models"
POSITION_WORDS = {
    "rope": "rotary (RoPE) on the whole head",
    "rope_partial": "rotary (RoPE) on part of the head",
    "rope_interleaved": "rotary (RoPE), interleaved pairs",
    "alibi": "ALiBi linear bias",
    "absolute": "absolute position embeddings",
    "none": "no position encoding (NoPE): position only through the causal mask",
}


def _ready(entry: Any) -> bool:
    from lminf_diag.lab.registry import lab_available
    from lminf_diag.models.embedded import is_complete, model_cache_path

    return lab_available(entry.name) if entry.shipped else is_complete(model_cache_path(entry.name))


def listing() -> dict[str, list[dict[str, Any]]]:
    """Embedded models, supported families and unsupported (absolute-position) families, as data.

    >>> sorted(listing())
    ['embedded', 'supported', 'unsupported']
    """
    from lminf_diag.lab.registry import lab_folder
    from lminf_diag.models import EMBEDDED
    from lminf_diag.models.embedded import DEFAULT_MODEL, model_cache_path
    from lminf_diag.models.families import known_families, supported_families

    embedded = [
        {
            "name": e.name,
            "default": e.name == DEFAULT_MODEL,
            "description": e.description,
            "shipped": e.shipped,
            "cached": _ready(e),
            "cache_path": str(lab_folder(e.name) if e.shipped else model_cache_path(e.name)),
        }
        for e in sorted(EMBEDDED.values(), key=lambda e: (e.name != DEFAULT_MODEL, e.name))
    ]
    supported = [
        {"model_type": f.model_type, "position": f.position, "route": f.route, "note": f.note}
        for f in supported_families()
    ]
    unsupported = [
        {
            "model_type": f.model_type,
            "position": f.position,
            "why": f"{f.note}: LM-Infinite needs relative positions (RoPE or ALiBi); with absolute "
            "embeddings a position past the training length has no embedding to look up",
        }
        for f in known_families()
        if not f.supported
    ]
    return {"embedded": embedded, "supported": supported, "unsupported": unsupported}


def render(data: dict[str, list[dict[str, Any]]]) -> str:
    """The listing as plain text."""
    lines = ["Embedded models (use with --model NAME):"]
    for e in data["embedded"]:
        if e.get("shipped"):
            state = ("shipped with the package" if e["cached"] else
                     "not shipped: loading it prints the command that trains it (about 5 minutes)")
        else:
            state = "converted, cached" if e["cached"] else "converted on first use"
        lines.append(f"  {e['name']}{' (default)' if e['default'] else ''}  [{state}]")
        lines.append(f"      {e['description']}")
    lines += ["", "Supported families (--model may also be a folder, a .gguf file or a hub id of these):"]
    width = max((len(f["model_type"]) for f in data["supported"]), default=0)
    for f in data["supported"]:
        pos = POSITION_WORDS.get(f["position"], f["position"])
        lines.append(f"  {f['model_type'].ljust(width)}  {pos}; {f['note']}")
    lines += ["", "Not supported (absolute positions):"]
    for f in data["unsupported"]:
        lines.append(f"  {f['model_type'].ljust(width)}  {f['why'].split(':')[0]}")
    lines.append(
        "  LM-Infinite needs relative positions (RoPE or ALiBi): with absolute embeddings a position past\n"
        "  the training length has no embedding to look up."
    )
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "list the embedded models and the supported model families",
        "List the embedded model names and the architectures LM-Infinite can be applied to, with\n"
        "how each encodes positions; absolute-position families are listed as unsupported.",
        ["diag models", "diag models --json | python -m json.tool"],
    )
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns 0."""
    data = listing()
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0
