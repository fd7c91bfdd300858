"""Lab readings across training seeds: a scheme's reading must hold for every seed.

Each lab scheme is trained with several seeds (``lab-rope``, ``lab-rope-s1``, ...). A reading
from one trained model is a property of that run; a property of the *scheme* must replicate
across its seeds. So, per scheme:

- a key figure becomes the mean of its seeds' estimates with a Student-t interval between
  seeds (``n`` = seeds: the unit of replication is the training run, windows are nested in it);
  censored figures ("fluent until", whose interval may run to the window's end) are not averaged
  but kept per seed;
- a verdict is the seeds' consensus: `present` (or `absent`) only when every seed's own verdict,
  decided from its window interval, says so; `inconclusive` otherwise, with the count per verdict
  in its ``tests`` text;
- `context_gain` says whether a model uses in-range context at all, on the same tokens: the
  loss of each token at positions T/2..T predicted from only its last T/16 tokens, minus its
  loss predicted from the whole window (paired per token, then per window). A model whose loss
  stops falling after a few bytes (near trigram level) cannot show what far context is worth.

Example:
    >>> from lminf_diag.analyze.estimate import Estimate, Verdict
    >>> figs = [Estimate("x", f"lab-rope{s} 8xT:baseline", v, v - .1, v + .1, 16)
    ...         for s, v in (("", 1.0), ("-s1", 1.2), ("-s2", 0.8))]
    >>> [(e.label, round(e.estimate, 2), e.n) for e in across_seeds(figs)]
    [('lab-rope 8xT:baseline', 1.0, 3)]
    >>> vs = [Verdict("logit_explosion", f"lab-rope{s} 8xT:baseline", w)
    ...       for s, w in (("", "present"), ("-s1", "present"), ("-s2", "inconclusive"))]
    >>> [(v.verdict, v.tests) for v in consensus(vs)]
    [('inconclusive', 'seeds disagree: present 2, inconclusive 1')]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from lminf_diag.analyze.estimate import Estimate, Verdict, estimate

CONTEXT_MARGIN = 0.05  # nats per byte: a smaller in-range context gain is "does not use context"
CONTEXT_FIGURE = "in-range context gain (loss from the last T/16 tokens minus from all, same tokens)"


def split_model(label: str) -> tuple[str, str]:
    """(model, rest) of a lab label: ``'lab-rope-s1 8xT:baseline'`` -> ``('lab-rope-s1', ' 8xT:baseline')``.

    >>> split_model("lab-rope-s1 8xT:baseline"), split_model("lab-nope:lambda")
    (('lab-rope-s1', ' 8xT:baseline'), ('lab-nope', ':lambda'))
    """
    for i, ch in enumerate(label):
        if ch in " :":
            return label[:i], label[i:]
    return label, ""


def scheme_of(model: str) -> str:
    """The seed-0 name of a lab model (itself when it is not a seeded name).

    >>> scheme_of("lab-alibi-s2"), scheme_of("lab-alibi"), scheme_of("lab-x")
    ('lab-alibi', 'lab-alibi', 'lab-x')
    """
    from lminf_diag.lab.specs import LAB_SPECS

    for spec in LAB_SPECS:
        if spec.name == model:
            return spec.base
    return model


def _scheme_label(label: str) -> str:
    model, rest = split_model(label)
    return scheme_of(model) + rest


def _censored(e: Estimate) -> bool:
    return e.ci_high == math.inf


def _distinct_models(labels: list[str]) -> bool:
    models = [split_model(label)[0] for label in labels]
    return len(set(models)) == len(models)


def across_seeds(figures: list[Estimate]) -> list[Estimate]:
    """Per-seed estimates -> one estimate per scheme (mean over seeds, t interval, n = seeds).

    Figures seen for one seed only, and censored ones, are returned as they are.
    """
    groups: dict[tuple[str, str], list[Estimate]] = {}
    for e in figures:
        key = (e.figure, e.label) if _censored(e) else (e.figure, _scheme_label(e.label))
        groups.setdefault(key, []).append(e)
    out = []
    for (figure, label), items in groups.items():
        if len(items) < 2 or not _distinct_models([e.label for e in items]):
            out += items  # one seed, or two parts of one model's run that share a label: not seeds
            continue
        first = items[0]
        pooled = estimate(
            [e.estimate for e in items], figure=figure, label=label, unit=first.unit, null=first.null
        )
        out.append(replace(pooled, method=f"t over {len(items)} seeds (each a mean over windows)"))
    return out


def consensus(verdicts: list[Verdict]) -> list[Verdict]:
    """Per-seed verdicts -> one per scheme: a verdict holds only when every seed reached it."""
    groups: dict[tuple[str, str, str], list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault((v.factor, _scheme_label(v.label), v.figure), []).append(v)
    out = []
    for (factor, label, figure), items in groups.items():
        counts = Counter(v.verdict for v in items)
        if len(items) == 1 or not _distinct_models([v.label for v in items]):
            out += items
            continue
        if len(counts) == 1:
            word = items[0].verdict
            tests = f"all {len(items)} seeds agree"
        else:
            word = "inconclusive"
            tests = "seeds disagree: " + ", ".join(f"{k} {n}" for k, n in counts.most_common())
        out.append(Verdict(factor, label, word, figure, items[0].margin, tests))
    return out


def context_gain(nll: np.ndarray, short: np.ndarray, train_len: int, label: str) -> Estimate:
    """The in-range context gain over windows, paired on the same tokens: `short` (K, N) holds the
    loss of the tokens at positions T/2..T predicted from their last T/16 tokens only (NaN
    elsewhere), `nll` (K, N) the same tokens' loss with the whole window before them.

    >>> full = np.tile(np.r_[np.nan, np.full(127, 1.5)], (4, 1))
    >>> short = np.full_like(full, np.nan)
    >>> short[:, 64:128] = 1.75
    >>> round(context_gain(full, short, 128, "m").estimate, 3)
    0.25
    """
    T = int(train_len)
    span = slice(T // 2, T)
    per_window = np.nanmean(short[:, span] - nll[:, span], axis=1)
    return estimate(
        per_window,
        figure=CONTEXT_FIGURE,
        label=label,
        unit="nats per token",
        null="no use of context beyond the last T/16 tokens (0, the same tokens either way)",
    )


def seeds_by_scheme(models: list[str]) -> dict[str, list[str]]:
    """{scheme (seed-0 name): [its models in run order]}.

    >>> seeds_by_scheme(["lab-rope", "lab-nope", "lab-rope-s1"])
    {'lab-rope': ['lab-rope', 'lab-rope-s1'], 'lab-nope': ['lab-nope']}
    """
    out: dict[str, list[str]] = {}
    for m in models:
        out.setdefault(scheme_of(m), []).append(m)
    return out


def per_seed_values(figures: list[Estimate], figure: str, label: str) -> list[Any]:
    """The per-seed estimates of `figure` whose scheme label is `label`, in order."""
    return [e for e in figures if e.figure == figure and _scheme_label(e.label) == label]


__all__ = [
    "CONTEXT_FIGURE",
    "CONTEXT_MARGIN",
    "across_seeds",
    "consensus",
    "context_gain",
    "per_seed_values",
    "scheme_of",
    "seeds_by_scheme",
    "split_model",
]
