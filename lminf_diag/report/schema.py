"""The one JSON schema of `--json` on stdout and `<out>/summary.json`.

    {verb, config, versions (git included), notes,
     key_figures: [{figure, label, estimate, ci_low, ci_high, n, unit, null, method, section}],
     verdicts:    [{factor, label, verdict, figure, margin, tests, section}],
     findings:    [sentence, ...],
     sections:    {section: {key_figures, verdicts, findings}},
     meta, report, reports: {verb: html file}}

Factors are `logit_explosion`, `entropy_growth`, `implicit_position`, `loss_breakdown`; labels
`baseline` and the mode names. Several verbs writing into one run folder keep each other's
sections (`merge_summary`).

Example:
    >>> from lminf_diag.synthetic import make_comparison
    >>> from lminf_diag.analyze import entropy_growth
    >>> p = results_payload("entropy", {"entropy": entropy_growth(make_comparison(n=256, train_len=64))}, {})
    >>> sorted(p["key_figures"][0])[:4], p["verdicts"][0]["factor"]
    (['ci_high', 'ci_low', 'estimate', 'figure'], 'entropy_growth')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lminf_diag.report.findings import short_window_note
from lminf_diag.report.keyfigures import key_table, verdict_list

CONFIG_KEYS = ("model", "text", "windows", "length", "train_len", "labels", "n_global", "n_local", "limit",
               "stride", "settings")


def results_payload(verb: str, results: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The one JSON schema of `--json` and `summary.json`.

    `{verb, config, versions, key_figures: [{figure, label, estimate, ci_low, ci_high, n, unit, section,
    ...}], verdicts: [{factor, label, verdict, section, ...}], findings: [str], sections: {section:
    {key_figures, verdicts, findings}}, meta}`; versions include `git`."""
    versions = dict(meta.get("versions") or {})
    versions["git"] = meta.get("git") or "-"
    sections = {}
    for name, result in results.items():
        one = {name: result}
        own = getattr(result, "findings", None)
        sections[name] = {
            "key_figures": key_table(one).to_records(),
            "verdicts": [{**v.to_dict(), "section": name} for v in verdict_list(one)],
            "findings": list(own()) if callable(own) else [],
        }
    note = short_window_note(results, meta)
    payload = {
        "verb": verb,
        "config": {k: meta.get(k) for k in CONFIG_KEYS if k in meta},
        "versions": versions,
        "notes": ([note] if note else []) + [str(line) for line in meta.get("notes", [])],
        "sections": sections,
        "meta": dict(meta),
    }
    return _flatten(payload)


def _flatten(payload: dict[str, Any]) -> dict[str, Any]:
    """Fill the flat lists key_figures, verdicts and findings from `payload["sections"]`."""
    secs = payload["sections"].values()
    payload["key_figures"] = [k for s in secs for k in s["key_figures"]]
    payload["verdicts"] = [v for s in secs for v in s["verdicts"]]
    payload["findings"] = list(payload.get("notes", [])) + [f for s in secs for f in s["findings"]]
    return payload


def merge_summary(path: Path, payload: dict[str, Any], verb: str, report: str) -> dict[str, Any]:
    """`payload` with the sections of other verbs already in `path` (same run folder) kept."""
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    merged = dict(payload)
    kept = old.get("sections") if isinstance(old, dict) and isinstance(old.get("sections"), dict) else {}
    if all(isinstance(v, dict) and "key_figures" in v for v in kept.values()):
        merged["sections"] = {**{k: v for k, v in kept.items() if k not in payload["sections"]},
                              **payload["sections"]}
    reports = old.get("reports") if isinstance(old, dict) and isinstance(old.get("reports"), dict) else {}
    merged["reports"] = {**reports, verb: report}
    return _flatten(merged)
