"""`run_reach`: passkey retrieval accuracy against the needle's distance, past n_local and far beyond.

All prompts have one length (a little more than the farthest distance), so only the needle's
distance from the end of the prompt changes. For each target distance (from inside the window to
8 x n_local or more) `trials` prompts place the needle as near that distance as the sentence
boundaries allow (the actual distances are recorded and shown). Runs:

- "lambda": LM-Infinite (Λ-mask + distance cap) with n_global, n_local;
- "topk": LM-Infinite plus, for the answering row, the top-k middle tokens per head;
- "streaming": StreamingLLM (sinks + recent tokens, positions by cache slot);
- "recompute": strided re-computation (`evaluate.recompute`) as it applies to retrieval: the
  answer is generated from the last n_local tokens of the prompt only, re-encoded as a fresh
  sequence with plain attention (stride >= the answer's length, so no re-encoding happens while
  it is written). For the first answer token this is a window of n_local tokens with nothing
  before it. It is not the `window` method: under a window mask, stacked layers still carry
  information from before the window (each layer reaches n_local further back), while the
  re-encoded prompt holds no token from before it, so a needle past n_local is gone for good.

n_local stands for the training length T here, as in LM-Infinite's setting (n_local = T). To keep
a CPU run cheap it may be set below the model's true training length: which keys are attended,
and so whether a needle can be reached, does not depend on T; T only sets where the plain
model's positions would leave its training distribution.

Example:
    >>> res = run_reach(model, tok, n_local=256, distances=[128, 512, 2048], trials=10)   # doctest: +SKIP
    >>> res.accuracy("lambda", 512).text()                                              # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, proportion
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.passkey import build_passkey_prompt, passkey_key, score_answer
from lminf_diag.evaluate.passkey_geometry import needle_distance

REACH_RUNS = ("lambda", "topk", "streaming", "recompute")
ACCURACY = "passkey accuracy at distance"


def place_needle(tok: Any, length: int, distance: int, key: int, haystack: str = "filler") -> Any:
    """A prompt of `length` tokens with the needle's first token about `distance` tokens from the end.

    The needle start moves linearly with the depth between depth 0 and depth 1; one calibration at
    both ends gives the depth, clipped to [0, 1] (a distance beyond reach gives the nearest one).
    """
    lo = build_passkey_prompt(tok, length, 0.0, key, haystack)
    hi = build_passkey_prompt(tok, length, 1.0, key, haystack)
    span = max(hi.needle_start - lo.needle_start, 1)
    depth = float(np.clip((lo.n_tokens - distance - lo.needle_start) / span, 0.0, 1.0))
    return build_passkey_prompt(tok, length, depth, key, haystack)


def _answer(model: Any, tok: Any, label: str, ids: Any, n_global: int, n_local: int, train_len: int,
            max_new_tokens: int) -> str:
    from lminf_diag.evaluate.sweep import greedy_answer
    from lminf_diag.patch.methods import method

    if label == "recompute":
        return greedy_answer(model, tok, ids[:, -n_local:], max_new_tokens)
    with method(model, label, train_len=train_len, n_global=n_global, n_local=n_local):
        return greedy_answer(model, tok, ids, max_new_tokens)


@dataclass
class ReachResult(AnalysisResult):
    """Per run label, the answered prompts by target distance: {label: {distance: [record, ...]}}."""

    records: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    n_local: int = 0
    n_global: int = 0
    length: int = 0
    title: str = "Reach: passkey retrieval against the needle's distance"
    description: str = (
        "Accuracy (Wilson 95% interval) of retrieving a passkey whose needle lies at a given distance "
        "from the end of the prompt (all prompts of one length). The dashed line marks n_local: beyond "
        "it the needle is outside the window. 'recompute' re-encodes only the last n_local tokens."
    )

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = list(self.records)

    @property
    def distances(self) -> list[int]:
        return sorted({d for per in self.records.values() for d in per})

    def accuracy(self, label: str, distance: int) -> Estimate:
        """Accuracy of one run at one target distance, Wilson interval."""
        recs = self.records.get(label, {}).get(int(distance), [])
        return proportion(sum(bool(r["correct"]) for r in recs), len(recs), figure=f"{ACCURACY} {distance}",
                          label=label)

    def actual(self, label: str, distance: int) -> float:
        """Median actual needle distance of the prompts at one target."""
        recs = self.records.get(label, {}).get(int(distance), [])
        return float(np.median([r["distance"] for r in recs])) if recs else float("nan")

    def key_figures(self) -> list[Estimate]:
        return [self.accuracy(lab, d) for lab in self.labels for d in self.distances]

    def findings(self) -> list[str]:
        out = []
        for lab in self.labels:
            beyond = [d for d in self.distances if self.actual(lab, d) > self.n_local]
            reached = [d for d in beyond if self.accuracy(lab, d).ci_low > 1e-9]
            if not beyond:
                continue
            if reached:
                far = max(reached)
                out.append(f"{lab} retrieves needles beyond n_local = {self.n_local}: at distance about "
                           f"{self.actual(lab, far):.0f}, accuracy {self.accuracy(lab, far).text()}.")
            else:
                out.append(f"{lab}: no retrieval beyond n_local = {self.n_local} can be told from none "
                           "(every interval past the window includes 0).")
        return out

    def to_frame(self) -> Any:
        import pandas as pd

        rows = []
        for lab in self.labels:
            for d in self.distances:
                e = self.accuracy(lab, d)
                rows.append({"label": lab, "distance": d, "actual_distance": self.actual(lab, d),
                             "accuracy": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n})
        return pd.DataFrame(rows)

    def figures(self) -> list[Any]:
        from lminf_diag.evaluate.sweep_figures import reach_figure

        curves = {}
        for lab in self.labels:
            pts = []
            for d in self.distances:
                e = self.accuracy(lab, d)
                if e.n:
                    pts.append((self.actual(lab, d), e.estimate, e.ci_low, e.ci_high))
            curves[lab] = pts
        return [reach_figure(curves, self.n_local)]


def run_reach(model: Any, tok: Any, *, n_local: int, distances: Sequence[int], n_global: int = 10,
              runs: Sequence[str] = REACH_RUNS, trials: int = 10, train_len: int | None = None,
              haystack: str = "filler", seed: int = 0, max_new_tokens: int = 8, run_dir: Any = None,
              progress: Any = None) -> ReachResult:
    """Accuracy against needle distance for each run (module docstring); resumable per (run, distance).

    `train_len`: the training length the methods are resolved with (default: the model's own).
    """
    from lminf_diag.evaluate.cells import CellStore, Steps, model_train_len

    bad = [r for r in runs if r not in REACH_RUNS]
    if not runs or bad:
        raise InvalidArgumentError(f"runs {list(runs)}: choose among {', '.join(REACH_RUNS)}")
    dists = sorted({int(d) for d in distances})
    if not dists or dists[0] < 1 or n_local < 1 or trials < 1:
        raise InvalidArgumentError(
            f"distances {list(distances)} (tokens >= 1), n_local {n_local} (>= 1), trials {trials} (>= 1)"
        )
    T = int(train_len or model_train_len(model) or n_local)
    probe = build_passkey_prompt(tok, dists[-1] + 512, 1.0, 12345, haystack)  # the needle as late as it goes
    length = int(dists[-1] + (probe.n_tokens - probe.needle_start) + 64)
    settings = {"n_local": n_local, "n_global": n_global, "trials": trials, "train_len": T, "haystack": haystack,
                "seed": seed, "max_new_tokens": max_new_tokens, "length": length}
    store = CellStore(run_dir, "reach", settings)
    steps = Steps(progress, len(runs) * len(dists))
    prompts: dict[int, list[Any]] = {}
    records: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for label in runs:
        for d in dists:
            key = f"{label}/d{d}"
            saved = store.load(key)
            if saved is not None:
                records.setdefault(label, {})[d] = saved["records"]
                steps.skip(f"{label} at distance {d}")
                continue
            if d not in prompts:
                prompts[d] = [place_needle(tok, length, d, passkey_key(seed, length, d / length, t), haystack)
                              for t in range(trials)]
            t0 = time.perf_counter()
            recs = []
            with steps.step(f"{label} at distance {d}: {trials} prompts"):
                for t, p in enumerate(prompts[d]):
                    ans = _answer(model, tok, label, p.input_ids, n_global, n_local, T, max_new_tokens)
                    recs.append({"trial": t, "key": p.key, "answer": ans, "correct": score_answer(ans, p.key),
                                 "distance": needle_distance(p.needle_start, p.n_tokens), "n_tokens": p.n_tokens})
            store.save(key, {"records": recs}, seconds=time.perf_counter() - t0)
            records.setdefault(label, {})[d] = recs
    return ReachResult(labels=list(runs), train_len=T, records=records, n_local=int(n_local),
                       n_global=int(n_global), length=length)


__all__ = ["ACCURACY", "REACH_RUNS", "ReachResult", "place_needle", "run_reach"]
