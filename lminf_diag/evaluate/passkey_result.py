"""The result of a passkey run: one record per prompt, accuracies with Wilson intervals, and where
each needle lay relative to the Λ.

Key figures (each an `Estimate` from `proportion`, n = prompts, Wilson 95% interval):

    passkey accuracy within T / beyond T            every label (lengths <= T / > T)
    passkey accuracy, needle inside Λ / outside Λ   every patched label, prompts longer than n_local
    passkey needles inside Λ (geometric expectation) the share of those prompts whose needle lies
                                                    inside the run's Λ: what a model that retrieves
                                                    only from inside it would score at best

Passkey decides no factor verdict (`verdicts()` is empty): a failed retrieval past T can come
from any of the three factors or from the task itself, so it is read as an outcome, next to its
geometric expectation, not as evidence for one factor.

Example:
    >>> from lminf_diag.evaluate.passkey_result import PasskeyResult, PasskeyTrial
    >>> rec = [PasskeyTrial("lambda", 256, 0.5, t, 12345, "", t < 3, 250, 0.5, 100 * t, 100 * t + 9,
    ...                     t < 3, t < 3) for t in (0, 1, 2, 3)]
    >>> res = PasskeyResult(labels=["lambda"], train_len=128, records=rec, lengths=[256], n_global=4,
    ...                     n_local=128)
    >>> [(e.figure, e.estimate) for e in res.key_figures()][1:3]
    [('passkey accuracy, needle inside Λ', 1.0), ('passkey accuracy, needle outside Λ', 0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, proportion

DESCRIPTION = (
    "Passkey retrieval: a 5-digit key is hidden in irrelevant text (the reference filler sentences, or a "
    "book) of a given length, at a seeded random depth per prompt (or at fixed depths), and the model is "
    "asked for it (greedy decoding; correct when the first number it writes is the key). Accuracies carry "
    "Wilson 95% intervals over prompts. A needle is inside the Λ when it lies entirely within the last "
    "n_local tokens (the window of the row that answers) or the first n_global tokens; its distance is the "
    "number of tokens from it to the end of the prompt. The share of needles inside the Λ is the geometric "
    "expectation: what a model that only retrieves from inside the window would score at best."
)
FIG_WITHIN = "passkey accuracy within T"
FIG_BEYOND = "passkey accuracy beyond T"
FIG_INSIDE = "passkey accuracy, needle inside Λ"
FIG_OUTSIDE = "passkey accuracy, needle outside Λ"
FIG_SHARE = "passkey needles inside Λ (geometric expectation)"


@dataclass(frozen=True)
class PasskeyTrial:
    """One prompt and its answer.

    needle_start, needle_end: the needle's token span [start, end) in the prompt (-1 when unknown).
    inside: the needle lies inside the Λ of this run's settings (`passkey_geometry.run_lambda`);
    None for the baseline, which attends every key. inside_lambda: the same flag for the "lambda"
    settings (n_global, n_local), recorded for every run (the geometric reference).
    """

    mode: str
    length: int
    depth: float
    trial: int
    key: int
    answer: str
    correct: bool
    n_tokens: int
    actual_depth: float
    needle_start: int = -1
    needle_end: int = -1
    inside: bool | None = None
    inside_lambda: bool | None = None

    @property
    def distance(self) -> int | None:
        """Tokens from the needle's first token to the end of the prompt (n_tokens - needle_start)."""
        return self.n_tokens - self.needle_start if self.needle_start >= 0 else None


def conditional_counts(correct: Sequence[bool], inside: Sequence[bool]) -> dict[str, tuple[int, int]]:
    """(successes, trials) of: all prompts, needle inside, needle outside, and prompts inside (the share).

    >>> conditional_counts([True, True, False, False, True], [True, True, True, False, False])
    {'all': (3, 5), 'inside': (2, 3), 'outside': (1, 2), 'share_inside': (3, 5)}
    """
    c = np.asarray(correct, dtype=bool)
    i = np.asarray(inside, dtype=bool)
    if c.shape != i.shape:
        raise ValueError(f"correct and inside differ in length: {c.size} and {i.size}.")
    return {
        "all": (int(c.sum()), int(c.size)),
        "inside": (int(c[i].sum()), int(i.sum())),
        "outside": (int(c[~i].sum()), int((~i).sum())),
        "share_inside": (int(i.sum()), int(i.size)),
    }


@dataclass
class PasskeyResult(AnalysisResult):
    """Accuracy per (label, length), overall and conditional on the needle's place in the Λ.

    `labels` are the runs, baseline first, then the top-k run ("lambda+top5") when one was asked
    for. `depths` is empty when every prompt drew a random depth (the default), else the fixed
    depths. `n_global` / `n_local` are the patch settings the flags were computed with.
    """

    records: list[PasskeyTrial] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    trials: int = 1
    haystack: str = "filler"
    n_global: int | None = None
    n_local: int | None = None
    seed: int = 0
    title: str = "Passkey retrieval"
    description: str = DESCRIPTION

    @property
    def random_depths(self) -> bool:
        """True when every prompt drew its own depth (no fixed depths)."""
        return not self.depths

    def _of(self, label: str) -> list[PasskeyTrial]:
        return [r for r in self.records if r.mode == label]

    def flags(self, label: str) -> list[PasskeyTrial]:
        """The prompts of `label` longer than n_local with a known flag: the only ones whose needle
        can lie outside the window (the baseline is read with the lambda settings' flag)."""
        if self.n_local is None:
            return []
        flag = "inside_lambda" if label == "baseline" else "inside"
        return [r for r in self._of(label) if r.n_tokens > self.n_local and getattr(r, flag) is not None]

    def conditional(self, label: str) -> dict[str, tuple[int, int]]:
        """`conditional_counts` of `label` over the prompts longer than n_local (`flags`)."""
        rows = self.flags(label)
        flag = "inside_lambda" if label == "baseline" else "inside"
        return conditional_counts([r.correct for r in rows], [bool(getattr(r, flag)) for r in rows])

    def accuracy_grid(self, mode: str) -> np.ndarray:
        """(n_depths, n_lengths) accuracy of `mode` at the fixed depths (NaN where no trial was run)."""
        grid = np.full((len(self.depths), len(self.lengths)), np.nan)
        frame = self.to_frame()
        frame = frame[frame["mode"] == mode]
        for (length, depth), cell in frame.groupby(["length", "depth"]):
            if float(depth) in self.depths and int(length) in self.lengths:
                grid[self.depths.index(float(depth)), self.lengths.index(int(length))] = cell[
                    "correct"
                ].mean()
        return grid

    def accuracy_by_length(self) -> pd.DataFrame:
        """Accuracy over all prompts of a length: one row per label, one column per length."""
        frame = self.to_frame()
        if frame.empty:
            return pd.DataFrame(index=self.labels, columns=self.lengths, dtype=float)
        table = frame.pivot_table(index="mode", columns="length", values="correct", aggfunc="mean")
        return table.reindex(index=self.labels, columns=self.lengths)

    def counts_by_length(self, label: str) -> list[tuple[int, int]]:
        """(correct, prompts) of `label` at each length, in `lengths` order."""
        rows = self._of(label)
        return [
            (sum(r.correct for r in rows if r.length == n), sum(1 for r in rows if r.length == n))
            for n in self.lengths
        ]

    def within_beyond(self, label: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """((correct, prompts) at lengths <= T, (correct, prompts) at lengths > T); all within when T is unknown."""
        rows = self._of(label)
        tl = self.train_len
        within = [r.correct for r in rows if tl is None or r.length <= tl]
        beyond = [r.correct for r in rows if tl is not None and r.length > tl]
        return (sum(within), len(within)), (sum(beyond), len(beyond))

    def key_figures(self) -> list[Estimate]:
        """Per label: accuracy within / beyond T; per patched label with prompts longer than n_local:
        accuracy with the needle inside / outside its Λ and the share inside (geometric expectation).
        Figures without any prompt are left out."""
        out: list[Estimate] = []
        for lab in self.labels:
            (kw, nw), (kb, nb) = self.within_beyond(lab)
            out += [proportion(kw, nw, figure=FIG_WITHIN, label=lab)] if nw else []
            out += [proportion(kb, nb, figure=FIG_BEYOND, label=lab)] if nb else []
            if lab == "baseline" or not self.flags(lab):
                continue
            c = self.conditional(lab)
            parts = ((FIG_INSIDE, c["inside"]), (FIG_OUTSIDE, c["outside"]), (FIG_SHARE, c["share_inside"]))
            out += [proportion(k, n, figure=fig, label=lab) for fig, (k, n) in parts if n]
        return out

    def findings(self) -> list[str]:
        """Sentences from the Wilson intervals only (`passkey_words`)."""
        from lminf_diag.evaluate.passkey_words import passkey_findings

        return passkey_findings(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt: mode, length, depth, trial, key, answer, correct, n_tokens, actual_depth,
        needle_start, needle_end, inside, inside_lambda, distance (tokens from the needle to the end)."""
        columns = [f.name for f in PasskeyTrial.__dataclass_fields__.values()]
        frame = pd.DataFrame([asdict(r) for r in self.records], columns=columns)
        frame["distance"] = [r.distance for r in self.records]
        return frame

    def figures(self) -> list:
        """Accuracy vs needle distance (Wilson bars, line at n_local), accuracy inside / outside the Λ
        next to the geometric expectation, accuracy vs length, and heat maps for fixed depths."""
        from lminf_diag.evaluate.passkey_figures import passkey_figures

        return passkey_figures(self)


__all__ = [
    "DESCRIPTION",
    "FIG_BEYOND",
    "FIG_INSIDE",
    "FIG_OUTSIDE",
    "FIG_SHARE",
    "FIG_WITHIN",
    "PasskeyResult",
    "PasskeyTrial",
    "conditional_counts",
]
