"""`run_lab`: the analyzers over K windows for every lab model, a long loss pass, and the copy task.

For each model and each multiple m of its training length T, `windows` windows of m*T bytes of
the held-out book (`carroll-alice`; the lab models were trained on the other four bundled books)
run plain and with LM-Infinite (n_local = T) under capture (`capture.compare`); the windows form
one `Replicate` and `analyze.analyze_all` gives the cell's key figures, verdicts and findings,
stored as they are declared. One more pass per model reads the loss at every position to
`fluency_multiple` x T over `windows` windows, baseline and LM-Infinite, and the loss analyzer
(`analyze.perplexity_by_position`) gives "fluent until" with its interval and censoring. The
copy task (`lab.copy_task`) asks whether each model uses a string seen d tokens back.
Every finished cell is kept in the run folder (`evaluate.cells.CellStore`): a rerun resumes.

Windows are cut by `capture.windows.plan_windows` without sharing a token while the book has
room (16 windows of 64x T = 8192 bytes fit in its 144k bytes); beyond, they repeat the book and
the findings say so.

Example:
    >>> result = run_lab(LabSettings(models=("lab-rope",), multiples=(4,), windows=4))  # doctest: +SKIP
    >>> [v.verdict for v in result.verdicts()][:2]  # doctest: +SKIP
    ['present', 'absent']
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.lab.copy_task import CopyCell, run_copy_task
from lminf_diag.lab.result import LabCell, LabFluency, LabResult
from lminf_diag.lab.specs import HELD_OUT_BOOK, LAB_SPECS, SEEDS, lab_names, lab_spec, scheme_names

LABELS = ("baseline", "lambda")


@dataclass(frozen=True)
class LabSettings:
    """What `run_lab` runs: which models, at which multiples of T, over how many windows."""

    models: tuple[str, ...] = tuple(scheme_names())  # a seed-0 name stands for its first `seeds` seeds
    seeds: int = SEEDS  # training seeds per scheme: a scheme's verdict must hold for each
    multiples: tuple[int, ...] = (8, 32)
    fluency_multiple: int = 64  # the loss pass reads this many x T tokens
    windows: int = 16  # independent windows per cell (and per loss pass)
    text: str = HELD_OUT_BOOK
    n_global: int = 10
    tolerance: float = 0.10  # "fluent": loss at most (1 + tolerance) x the in-range loss (T/2..T)
    copy_distances: tuple[float, ...] = (0.25, 0.75, 2.0, 8.0)  # copy task distances, x T
    copy_trials: int = 16  # 0 skips the copy task
    copy_length: int = 16  # letters of the copied string

    def check(self) -> None:
        """Clear errors for settings that cannot run."""
        for name in self.models:
            lab_spec(name)
        if not self.models:
            raise InvalidArgumentError("no lab model given; the lab has: " + ", ".join(lab_names()))
        if not 1 <= self.seeds <= SEEDS:
            raise InvalidArgumentError(f"seeds {self.seeds}: the lab ships 1 to {SEEDS} seeds per scheme")
        if not self.multiples or any(int(m) < 2 for m in self.multiples):
            raise InvalidArgumentError(f"multiples {self.multiples}: give at least one, each >= 2 (x T)")
        if self.fluency_multiple < 2:
            raise InvalidArgumentError(f"fluency_multiple {self.fluency_multiple} must be >= 2 (x T)")
        if self.windows < 1:
            raise InvalidArgumentError(f"windows {self.windows}: at least 1 (4 or more give an interval)")
        if not 0 < self.tolerance < 10:
            raise InvalidArgumentError(f"tolerance {self.tolerance} must be a fraction such as 0.1")
        if self.copy_trials < 0 or self.copy_length < 2 or any(d <= 0 for d in self.copy_distances):
            raise InvalidArgumentError(
                f"copy task: trials {self.copy_trials} (>= 0), length {self.copy_length} (>= 2), "
                f"distances {self.copy_distances} (> 0, multiples of T)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def run_models(self) -> list[str]:
        """The models to run: each seed-0 name with its other seeds (up to `seeds`), in order.

        >>> LabSettings(models=("lab-rope", "lab-nope-s2"), seeds=2).run_models()
        ['lab-rope', 'lab-rope-s1', 'lab-nope-s2']
        """
        out: list[str] = []
        for name in self.models:
            spec = lab_spec(name)
            if spec.seed:
                out.append(name)
            else:
                out += [s.name for s in LAB_SPECS if s.base == name and s.seed < self.seeds]
        return list(dict.fromkeys(out))

    def copy_tokens(self, train_len: int) -> list[int]:
        """The copy distances in tokens (at least the string's length), sorted, unique.

        >>> LabSettings().copy_tokens(128)
        [32, 96, 256, 1024]
        """
        return sorted({max(self.copy_length, int(round(d * train_len))) for d in self.copy_distances})


def nll_trace(nll: np.ndarray, label: str, train_len: int, source: str, window: dict | None = None) -> Any:
    """A `Trace` holding only a per-token loss (N,): what the loss analyzer reads."""
    from lminf_diag.capture.trace import Trace, TraceMeta

    e3, e4 = np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0, 0), np.float32)
    meta = TraceMeta(
        text_source=source,
        n_tokens=int(len(nll)),
        train_len=int(train_len),
        label=label,
        extra={"window": window} if window else {},
    )
    return Trace(
        meta=meta,
        layers=np.zeros(0, np.int64),
        heads=np.zeros(0, np.int64),
        positions=np.zeros(0, np.int64),
        entropy=e3,
        max_logit=e3,
        lse=e3,
        sink_mass=e3,
        dist_mass=e4,
        dist_edges=np.zeros(1),
        profile_rows=np.zeros(0, np.int64),
        profile_dist=np.zeros(0, np.int64),
        logit_profile=e4,
        hidden_layers=np.zeros(0, np.int64),
        hidden_positions=np.zeros(0, np.int64),
        hidden=np.zeros((0, 0, 0), np.float16),
        nll=np.asarray(nll, np.float32),
    )


def loss_result(nll: dict[str, np.ndarray], train_len: int, tolerance: float, sources: list[str]) -> Any:
    """The loss analyzer's result on per-token losses {label: (K, N)} (one window per row)."""
    from lminf_diag.analyze import perplexity_by_position
    from lminf_diag.capture.windows import Replicate

    k = next(iter(nll.values())).shape[0]
    rep = Replicate(
        [{lab: nll_trace(a[w], lab, train_len, sources[w]) for lab, a in nll.items()} for w in range(k)]
    )
    return perplexity_by_position(rep, train_len=train_len, tolerance=tolerance)


def _repeated(windows: list[Any]) -> bool:
    return any("(repeated)" in w.text for w, _ in windows)


def _cell(model: Any, tok: Any, name: str, T: int, m: int, s: LabSettings) -> LabCell:
    """Capture K windows of m*T tokens plain and patched; the analyzers' declarations."""
    from lminf_diag.analyze import analyze_all
    from lminf_diag.capture.compare import auto_stride, compare
    from lminf_diag.capture.windows import Replicate, plan_windows

    length = m * T
    windows = plan_windows(tok, [s.text], length, s.windows, repeat=True)
    cmps = []
    for where, ids in windows:
        cmp = compare(
            model,
            input_ids=ids,
            modes=("lambda",),
            n_global=s.n_global,
            n_local=T,
            stride=auto_stride(length),
            text_source=where.text,
        )
        for trace in cmp.traces.values():
            trace.meta.extra["window"] = where.to_dict()
        cmps.append(cmp)
    results = analyze_all(Replicate(cmps), train_len=T)
    figs = [(sec, e) for sec, r in results.items() for e in r.key_figures()]
    verdicts = [v for r in results.values() for v in r.verdicts()]
    findings = [line for r in results.values() for line in r.findings()]
    return LabCell(
        name, lab_spec(name).scheme, m, length, len(windows), figs, verdicts, findings, _repeated(windows)
    )


def _loss_pass(model: Any, tok: Any, T: int, s: LabSettings) -> tuple[np.ndarray, list[str], bool]:
    """(2, K, N) per-token loss, baseline and LM-Infinite, over K windows of fluency_multiple x T."""
    import torch

    from lminf_diag.capture.nll import token_nll
    from lminf_diag.capture.windows import plan_windows
    from lminf_diag.patch import lm_infinite, through_kernel

    windows = plan_windows(tok, [s.text], s.fluency_multiple * T, s.windows, repeat=True)
    out = np.full((2, len(windows), s.fluency_multiple * T), np.nan, np.float32)
    for w, (_, ids) in enumerate(windows):
        with torch.no_grad(), through_kernel(model):  # bounded memory for eager ALiBi too
            out[0, w] = token_nll(model, ids)
            with lm_infinite(model, n_global=s.n_global, n_local=T):
                out[1, w] = token_nll(model, ids)
    return out, [f"{w.text}@{w.offset}" for w, _ in windows], _repeated(windows)


def _load(name: str) -> tuple[Any, Any, int]:
    from lminf_diag.models import load_model, model_info

    model, tok = load_model(name)
    return model, tok, int(model_info(model).train_len)


def run_lab(settings: LabSettings = LabSettings(), run_dir: Any = None, progress: Any = None) -> LabResult:
    """Every (model, multiple) cell, each model's loss pass and copy task; a `LabResult`.

    `run_dir`: a `RunDir` or folder keeping finished cells (resume, cell by cell); `progress`: a
    factory such as `lminf_diag.cli.progress.Progress` (called with the number of steps).
    """
    from lminf_diag.evaluate.cells import CellStore, Steps

    settings.check()
    s = settings
    common = {"text": s.text, "windows": s.windows, "n_global": s.n_global}
    cells_store = CellStore(run_dir, "lab", common)
    loss_store = CellStore(run_dir, "lab-loss", {**common, "fluency_multiple": s.fluency_multiple})
    copy_store = CellStore(
        run_dir,
        "lab-copy",
        {
            "text": s.text,
            "n_global": s.n_global,
            "trials": s.copy_trials,
            "distances": list(s.copy_distances),
            "length": s.copy_length,
        },
    )
    multiples = sorted({int(m) for m in s.multiples})
    per_model = len(multiples) + 1 + (1 if s.copy_trials else 0)
    models = s.run_models()
    steps = Steps(progress, len(models) * per_model)
    result = LabResult(settings=s.to_dict())
    loaded: tuple[str, Any, Any, int] | None = None

    def model_of(name: str) -> tuple[Any, Any, int]:
        nonlocal loaded
        if loaded is None or loaded[0] != name:
            loaded = (name, *_load(name))
        return loaded[1], loaded[2], loaded[3]

    train_lens = set()
    for name in models:
        scheme = lab_spec(name).scheme
        T = None
        for m in multiples:
            key = f"{name}/{m}x"
            rec = cells_store.load(key)
            if rec is None:
                model, tok, T = model_of(name)
                with steps.step(
                    f"{name}: {s.windows} windows of {m * T} tokens ({m}x T), plain and LM-Infinite"
                ):
                    t0 = time.perf_counter()
                    cell = _cell(model, tok, name, T, m, s)
                    cells_store.save(
                        key, {**cell.to_record(), "train_len": T}, seconds=time.perf_counter() - t0
                    )
            else:
                steps.skip(f"{name} at {m}x T")
                T = int(rec["train_len"])
                cell = LabCell.from_record(name, scheme, m, m * T, rec)
            result.cells.append(cell)
        key = f"{name}/loss"
        rec = loss_store.load(key)
        if rec is None:
            model, tok, T = model_of(name)
            with steps.step(
                f"{name}: loss at every position to {s.fluency_multiple}x T, {s.windows} windows"
            ):
                t0 = time.perf_counter()
                arr, sources, repeated = _loss_pass(model, tok, T, s)
                rec = {"sources": sources, "repeated": repeated, "train_len": T, "array": arr}
                loss_store.save(
                    key, {k: v for k, v in rec.items() if k != "array"}, arr, seconds=time.perf_counter() - t0
                )
        else:
            steps.skip(f"{name} loss pass")
        T = int(rec["train_len"])
        nll = {lab: np.asarray(rec["array"][i], np.float64) for i, lab in enumerate(LABELS)}
        result.fluency.append(
            LabFluency(
                name,
                scheme,
                T,
                s.fluency_multiple,
                nll,
                loss_result(nll, T, s.tolerance, list(rec["sources"])),
                bool(rec["repeated"]),
            )
        )
        if s.copy_trials:
            result.copy.append(_copy_cell(name, scheme, s, copy_store, steps, model_of))
        train_lens.add(T)
    result.train_len = min(train_lens)
    result.labels = list(LABELS)
    return result


def _copy_cell(name: str, scheme: str, s: LabSettings, store: Any, steps: Any, model_of: Any) -> CopyCell:
    """The copy task of one model, computed or loaded from its cell."""
    from lminf_diag.data import load_text

    key = f"{name}/copy"
    rec = store.load(key)
    if rec is None:
        model, _, T = model_of(name)
        dists = s.copy_tokens(T)
        with steps.step(f"{name}: copy task at d = {dists} tokens, {s.copy_trials} trials"):
            t0 = time.perf_counter()
            text = load_text(s.text)[0].encode("utf-8")
            cell = run_copy_task(
                model,
                name,
                scheme,
                T,
                text,
                distances=dists,
                trials=s.copy_trials,
                length=s.copy_length,
                n_global=s.n_global,
            )
            arr = np.stack(
                [np.stack([cell.gain[lab], cell.first_copy[lab]]) for lab in LABELS]
            )  # (2, 2, D, K)
            store.save(key, {"distances": dists, "train_len": T}, arr, seconds=time.perf_counter() - t0)
        return cell
    steps.skip(f"{name} copy task")
    arr = rec["array"]
    gain = {lab: arr[i, 0] for i, lab in enumerate(LABELS)}
    first = {lab: arr[i, 1] for i, lab in enumerate(LABELS)}
    T = int(rec["train_len"])
    return CopyCell(name, scheme, T, T, [int(d) for d in rec["distances"]], gain, first, s.copy_length)


__all__ = ["LABELS", "LabSettings", "loss_result", "nll_trace", "run_lab"]
