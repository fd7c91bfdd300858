"""`SweepResult`: fluency and passkey information per (n_global, n_local) cell, with intervals.

Per cell:
- fluency: loss past T minus the in-range loss (T/2..T), per window, mean with a t interval
  over the K windows (the loss analyzer's "rise", `analyze.loss.LossResult`);
- retrieval: passkey accuracy for needles beyond n_local, Wilson interval;
- expected: the share of those needles inside the Λ (entirely among the first n_global tokens),
  the geometric expectation, with its Wilson interval.

Findings are generated from the intervals only: a cell is fluent when its interval lies
entirely below `margin` nats, not fluent when entirely above, undecided otherwise; retrieval is
"above the geometry" when the accuracy's lower bound exceeds the share inside the Λ, "below"
when its upper bound is under it.

Example:
    >>> import numpy as np
    >>> nll = np.r_[np.nan, np.full(63, 2.0), np.full(64, 2.0), np.full(128, 2.5)]
    >>> cell = SweepCell(4, 64, np.stack([nll, nll + 0.1]), ["a", "b"], [])
    >>> res = SweepResult(method="lambda", train_len=128, cells=[cell])
    >>> round(res.fluency(4, 64).estimate, 3)
    0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lminf_diag.analyze.base import AnalysisResult
from lminf_diag.analyze.estimate import Estimate, proportion
from lminf_diag.errors import InvalidArgumentError

FLUENCY = "loss past T minus in range"
RETRIEVAL = "passkey accuracy, needle beyond n_local"
EXPECTED = "needles inside the Λ (geometric expectation)"
MARGIN = 0.10  # nats: a fluency rise below this is "fluent"


@dataclass
class SweepCell:
    """One (n_global, n_local) cell: per-token loss (K, N) and the passkey records."""

    n_global: int
    n_local: int
    nll: np.ndarray = field(repr=False)  # (K windows, N tokens), NaN at position 0
    sources: list[str] = field(default_factory=list)
    passkey: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"n_global={self.n_global}, n_local={self.n_local}"


@dataclass
class SweepResult(AnalysisResult):
    """The sweep's cells; `fluency`, `retrieval` and `expected` give each cell's estimates."""

    method: str = "lambda"
    cells: list[SweepCell] = field(default_factory=list)
    length: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    margin: float = MARGIN
    title: str = "The n_global x n_local trade-off: fluency and retrieval"
    description: str = (
        "Each cell runs the method with n_global global tokens and an n_local window. Fluency: the mean "
        "loss past the training length T minus the loss over positions T/2..T of the same window (0 = as "
        "fluent as in range), 95% t interval over the windows. Retrieval: passkey accuracy for needles "
        "farther from the question than n_local (outside the window), Wilson 95% interval, next to the "
        "share of those needles lying inside the Λ (among the first n_global tokens): the geometric "
        "expectation."
    )
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.train_len is None:
            raise InvalidArgumentError("the training length is unknown; pass train_len=N")
        if not self.labels:
            self.labels = [c.label for c in self.cells]

    @classmethod
    def from_cells(cls, s: Any, train_len: int, cells: dict[tuple[int, int], dict[str, Any]]) -> SweepResult:
        """From the saved cell records {(n_global, n_local): record with "array"} of a run."""
        out = []
        for (g, n), rec in cells.items():
            if rec is None:
                raise InvalidArgumentError(f"cell n_global={g}, n_local={n} is missing from the run folder")
            out.append(SweepCell(int(g), int(n), np.asarray(rec["array"], np.float64), list(rec["sources"]),
                                 list(rec["passkey"])))
        return cls(method=s.method, train_len=int(train_len), cells=out, length=int(s.length),
                   settings=s.to_dict())

    @property
    def n_globals(self) -> list[int]:
        return sorted({c.n_global for c in self.cells})

    @property
    def n_locals(self) -> list[int]:
        return sorted({c.n_local for c in self.cells})

    def cell(self, n_global: int, n_local: int) -> SweepCell:
        """The cell of (n_global, n_local); a clear error when the grid lacks it."""
        for c in self.cells:
            if c.n_global == n_global and c.n_local == n_local:
                return c
        raise InvalidArgumentError(
            f"no cell n_global={n_global}, n_local={n_local}; the grid has n_global {self.n_globals} "
            f"and n_local {self.n_locals}"
        )

    def loss(self, n_global: int, n_local: int) -> Any:
        """The loss analyzer's result on this cell's windows (`lab.run.loss_result`)."""
        key = (n_global, n_local)
        if key not in self._cache:
            from lminf_diag.lab.run import loss_result

            c = self.cell(n_global, n_local)
            sources = c.sources or [f"window {i}" for i in range(c.nll.shape[0])]
            self._cache[key] = loss_result({self.method: c.nll}, int(self.train_len), 0.10, sources)
        return self._cache[key]

    def fluency(self, n_global: int, n_local: int) -> Estimate:
        """Loss past T minus in range, mean over windows with its t interval."""
        e = self.loss(n_global, n_local).estimates(self.method)["rise"]
        return Estimate(FLUENCY, self.cell(n_global, n_local).label, e.estimate, e.ci_low, e.ci_high, e.n,
                        "nats", "the in-range loss (positions T/2..T)", e.method, e.values)

    def retrieval(self, n_global: int, n_local: int) -> Estimate:
        """Passkey accuracy over the needles beyond n_local, Wilson interval."""
        c = self.cell(n_global, n_local)
        return proportion(sum(bool(r["correct"]) for r in c.passkey), len(c.passkey), figure=RETRIEVAL,
                          label=c.label)

    def expected(self, n_global: int, n_local: int) -> Estimate:
        """Share of those needles entirely among the first n_global tokens, Wilson interval."""
        c = self.cell(n_global, n_local)
        return proportion(sum(bool(r["inside"]) for r in c.passkey), len(c.passkey), figure=EXPECTED,
                          label=c.label)

    def key_figures(self) -> list[Estimate]:
        out = []
        for c in self.cells:
            out.append(self.fluency(c.n_global, c.n_local))
            if c.passkey:
                out += [self.retrieval(c.n_global, c.n_local), self.expected(c.n_global, c.n_local)]
        return out

    def findings(self) -> list[str]:
        out = []
        for n in self.n_locals:
            groups: dict[str, list[str]] = {"fluent": [], "not fluent": [], "undecided": []}
            for g in self.n_globals:
                e = self.fluency(g, n)
                if e.has_interval and e.ci_high < self.margin:
                    groups["fluent"].append(str(g))
                elif e.has_interval and e.ci_low > self.margin:
                    groups["not fluent"].append(str(g))
                else:
                    groups["undecided"].append(str(g))
            parts = [f"{k} with n_global {', '.join(v)}" for k, v in groups.items() if v]
            out.append(
                f"{self.method}, n_local={n}: {'; '.join(parts)} (loss past T = {self.train_len} minus in "
                f"range, 95% interval against {self.margin} nats)."
            )
        for c in self.cells:
            if not c.passkey:
                continue
            acc, exp = self.retrieval(c.n_global, c.n_local), self.expected(c.n_global, c.n_local)
            if acc.ci_low > exp.estimate + 1e-9:
                how = "above the geometric expectation: the model reads past the Λ (through the layers)"
            elif acc.ci_high < exp.estimate - 1e-9:
                how = "below the geometric expectation: needles inside the Λ are not all retrieved"
            else:
                continue
            out.append(f"{self.method}, {c.label}: retrieval beyond n_local {acc.text()} is {how} "
                       f"({exp.estimate:.2f} of the needles lie inside the Λ).")
        if not any(c.passkey for c in self.cells):
            out.append("No passkey prompts were run (passkey_trials = 0): only fluency is shown.")
        return out

    def to_frame(self) -> Any:
        import pandas as pd

        rows = []
        for c in self.cells:
            row: dict[str, Any] = {"label": c.label, "method": self.method, "n_global": c.n_global,
                                   "n_local": c.n_local}
            for name, e in (("fluency", self.fluency(c.n_global, c.n_local)),
                            ("retrieval", self.retrieval(c.n_global, c.n_local)),
                            ("expected", self.expected(c.n_global, c.n_local))):
                row.update({name: e.estimate, f"{name}_low": e.ci_low, f"{name}_high": e.ci_high,
                            f"{name}_n": e.n})
            rows.append(row)
        return pd.DataFrame(rows)

    def figures(self) -> list[Any]:
        from lminf_diag.evaluate.sweep_figures import heatmap

        return [
            heatmap(self, self.fluency, f"{self.method}: loss past T minus in range (nats; 0 = fluent)",
                    "nats", reverse=True),
            heatmap(self, self.retrieval, f"{self.method}: passkey accuracy, needle beyond n_local "
                    "(cell text: accuracy [95% CI] | share inside the Λ)", "accuracy", expected=self.expected),
        ]


def cell_text(e: Estimate, digits: int = 2) -> str:
    """'0.12<br>[0.05, 0.20]' for a heat-map cell; 'n/a' without an estimate.

    >>> cell_text(Estimate("x", "y", 0.5, 0.25, 0.75, 8))
    '0.50<br>[0.25, 0.75]'
    """
    if not math.isfinite(e.estimate):
        return "n/a"
    if not e.has_interval:
        return f"{e.estimate:.{digits}f}<br>(no interval)"
    return f"{e.estimate:.{digits}f}<br>[{e.ci_low:.{digits}f}, {e.ci_high:.{digits}f}]"


__all__ = ["EXPECTED", "FLUENCY", "MARGIN", "RETRIEVAL", "SweepCell", "SweepResult", "cell_text"]
