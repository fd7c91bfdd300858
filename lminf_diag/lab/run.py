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

import tempfile
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
    seeds: int | None = None  # training seeds per scheme (None: every shipped seed); verdicts need each
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
        if self.seeds is not None and not 1 <= self.seeds <= SEEDS:
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
        from lminf_diag.lab.registry import lab_available

        out: list[str] = []
        for name in self.models:
            spec = lab_spec(name)
            if spec.seed:
                out.append(name)
                continue
            seeded = [s.name for s in LAB_SPECS if s.base == name]
            if self.seeds is None:  # every seed this installation ships (seed 0 at least)
                out += [name] + [n for n in seeded[1:] if lab_available(n)]
            else:
                out += seeded[: self.seeds]
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
    from lminf_diag.attention.method_spec import MethodSettings
    from lminf_diag.capture.compare import auto_stride, compare
    from lminf_diag.capture.windows import Replicate, plan_windows

    lam = MethodSettings(n_global=s.n_global, n_local=T)
    length = m * T
    windows = plan_windows(tok, [s.text], length, s.windows, repeat=True)
    cmps = []
    for where, ids in windows:
        cmp = compare(
            model,
            input_ids=ids,
            modes=("lambda",),
            **lam.patch(),
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


def _short_context_nll(model: Any, ids: Any, T: int) -> np.ndarray:
    """(N,) the loss of the tokens at positions T/2..T-1 predicted from their last T/16 tokens only
    (each re-encoded on its own after the window's first token, the BOS every training sequence
    began with; in one batch), NaN elsewhere: the in-range context gain's pair."""
    import torch

    c = max(1, T // 16)
    n = int(ids.shape[1])
    out = np.full(n, np.nan, np.float32)
    pos = torch.arange(T // 2, min(T, n))
    x = torch.stack([torch.cat([ids[0, :1], ids[0, p - c : p]]) for p in pos.tolist()])  # (P, 1 + c)
    logp = torch.log_softmax(model(x).logits[:, -1].float(), -1)  # (P, V) next-token log-probs
    out[pos.numpy()] = (-logp.gather(-1, ids[0, pos][:, None])[:, 0]).numpy()
    return out


def _loss_pass(model: Any, tok: Any, T: int, s: LabSettings) -> tuple[np.ndarray, list[str], bool]:
    """(3, K, N) per-token loss over K windows of fluency_multiple x T: baseline, LM-Infinite, and
    the baseline from the last T/16 tokens only at positions T/2..T (`_short_context_nll`)."""
    import torch

    from lminf_diag.attention.method_spec import MethodSettings
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.capture.windows import plan_windows
    from lminf_diag.patch import lm_infinite, through_kernel

    lam = MethodSettings(n_global=s.n_global, n_local=T)

    windows = plan_windows(tok, [s.text], s.fluency_multiple * T, s.windows, repeat=True)
    out = np.full((3, len(windows), s.fluency_multiple * T), np.nan, np.float32)
    for w, (_, ids) in enumerate(windows):
        with torch.no_grad(), through_kernel(model):  # bounded memory for eager ALiBi too
            out[0, w] = token_nll(model, ids)
            out[2, w] = _short_context_nll(model, ids, T)
            with lm_infinite(model, **lam.kwargs()):
                out[1, w] = token_nll(model, ids)
    return out, [f"{w.text}@{w.offset}" for w, _ in windows], _repeated(windows)


_LOADED: dict[str, tuple[Any, Any, int]] = {}  # one model kept per process (a worker's units reuse it)


def _load(name: str) -> tuple[Any, Any, int]:
    from lminf_diag.models import load_model, model_info

    if name not in _LOADED:
        _LOADED.clear()
        model, tok = load_model(name)
        _LOADED[name] = (model, tok, int(model_info(model).train_len))
    return _LOADED[name]


def unit_cell(name: str, m: int, s: LabSettings) -> dict[str, Any]:
    """One (model, multiple) cell, computed: its record (a unit of work; runs in any process)."""
    t0 = time.perf_counter()
    model, tok, T = _load(name)
    cell = _cell(model, tok, name, T, m, s)
    return {"record": {**cell.to_record(), "train_len": T}, "array": None, "seconds": time.perf_counter() - t0}


def unit_loss(name: str, s: LabSettings) -> dict[str, Any]:
    """One model's loss pass, computed (a unit of work)."""
    t0 = time.perf_counter()
    model, tok, T = _load(name)
    arr, sources, repeated = _loss_pass(model, tok, T, s)
    rec = {"sources": sources, "repeated": repeated, "train_len": T}
    return {"record": rec, "array": arr, "seconds": time.perf_counter() - t0}


def unit_copy(name: str, s: LabSettings) -> dict[str, Any]:
    """One model's copy task, computed (a unit of work)."""
    from lminf_diag.data import load_text

    t0 = time.perf_counter()
    model, _, T = _load(name)
    dists = s.copy_tokens(T)
    text = load_text(s.text)[0].encode("utf-8")
    cell = run_copy_task(model, name, lab_spec(name).scheme, T, text, distances=dists,
                         trials=s.copy_trials, length=s.copy_length, n_global=s.n_global)
    arr = np.stack([np.stack([cell.gain[lab], cell.first_copy[lab]]) for lab in LABELS])  # (2, 2, D, K)
    return {"record": {"distances": dists, "train_len": T}, "array": arr, "seconds": time.perf_counter() - t0}


def _stores(s: LabSettings, run_dir: Any) -> dict[str, Any]:
    from lminf_diag.evaluate.cells import CellStore

    common = {"text": s.text, "windows": s.windows, "n_global": s.n_global}
    copy = {"text": s.text, "n_global": s.n_global, "trials": s.copy_trials,
            "distances": list(s.copy_distances), "length": s.copy_length}
    return {
        "cell": CellStore(run_dir, "lab", common),
        "loss": CellStore(run_dir, "lab-loss", {**common, "fluency_multiple": s.fluency_multiple}),
        "copy": CellStore(run_dir, "lab-copy", copy),
    }


def _units(s: LabSettings, models: list[str]) -> list[tuple[str, str, str, Any]]:
    """(store, key, description, Unit) for every unit of the lab, in serial order."""
    from lminf_diag.parallel import Unit

    out = []
    for name in models:
        for m in sorted({int(m) for m in s.multiples}):
            out.append(("cell", f"{name}/{m}x", f"{name}: {s.windows} windows at {m}x T, plain and LM-Infinite",
                        Unit(f"{name}/{m}x", unit_cell, (name, m, s))))
        out.append(("loss", f"{name}/loss", f"{name}: loss at every position to {s.fluency_multiple}x T, "
                    f"{s.windows} windows", Unit(f"{name}/loss", unit_loss, (name, s))))
        if s.copy_trials:
            out.append(("copy", f"{name}/copy", f"{name}: copy task, {s.copy_trials} trials per distance",
                        Unit(f"{name}/copy", unit_copy, (name, s))))
    return out


def run_lab(settings: LabSettings = LabSettings(), run_dir: Any = None, progress: Any = None,
            workers: int = 1, ray_address: str | None = None) -> LabResult:
    """Every (model, multiple) cell, each model's loss pass and copy task; a `LabResult`.

    `run_dir`: a `RunDir` or folder keeping finished cells (resume, cell by cell); `progress`: a
    factory such as `lminf_diag.cli.progress.Progress` (called with the number of steps).
    `workers` > 1 runs the missing units in that many local processes, `ray_address` as Ray
    tasks (`lminf_diag.parallel`); finished units are saved here as they arrive, the same files
    a serial run writes.
    """
    from lminf_diag.evaluate.cells import Steps
    from lminf_diag.parallel import check_workers, run_units

    settings.check()
    check_workers(workers, ray_address)
    if run_dir is None:  # units still pass through files (a worker's result is saved, then read back)
        with tempfile.TemporaryDirectory(prefix="lminf-lab-") as tmp:
            return run_lab(settings, tmp, progress, workers, ray_address)
    s = settings
    stores = _stores(s, run_dir)
    models = s.run_models()
    plan = _units(s, models)
    steps = Steps(progress, len(plan))
    todo, what = [], {}
    for store, key, desc, unit in plan:
        if stores[store].load(key) is None:
            todo.append(unit)
            what[key] = (store, desc)
        else:
            steps.skip(desc)

    def save(key: str, out: dict[str, Any]) -> None:
        store, desc = what[key]
        stores[store].save(key, out["record"], out["array"], seconds=out["seconds"])
        steps.skip(desc, f"done in {out['seconds']:.0f} s")

    if workers <= 1 and ray_address is None:  # serial: time each step as it runs (ETA shown)
        for unit in todo:
            with steps.step(what[unit.key][1]):
                out = unit.fn(*unit.args)
            store, _ = what[unit.key]
            stores[store].save(unit.key, out["record"], out["array"], seconds=out["seconds"])
    else:
        run_units(todo, workers=workers, ray_address=ray_address, on_done=save)
    return assemble(s, models, stores)


def assemble(s: LabSettings, models: list[str], stores: dict[str, Any]) -> LabResult:
    """The `LabResult` from the saved units of every model (all must be there)."""
    result = LabResult(settings=s.to_dict())
    train_lens = set()
    for name in models:
        scheme = lab_spec(name).scheme
        for m in sorted({int(m) for m in s.multiples}):
            rec = stores["cell"].load(f"{name}/{m}x")
            T = int(rec["train_len"])
            result.cells.append(LabCell.from_record(name, scheme, m, m * T, rec))
        rec = stores["loss"].load(f"{name}/loss")
        T = int(rec["train_len"])
        nll = {lab: np.asarray(rec["array"][i], np.float64) for i, lab in enumerate(LABELS)}
        short = np.asarray(rec["array"][2], np.float64) if len(rec["array"]) > 2 else None
        result.fluency.append(LabFluency(name, scheme, T, s.fluency_multiple, nll,
                                         loss_result(nll, T, s.tolerance, list(rec["sources"])),
                                         bool(rec["repeated"]), short))
        if s.copy_trials:
            rec = stores["copy"].load(f"{name}/copy")
            arr = rec["array"]
            gain = {lab: arr[i, 0] for i, lab in enumerate(LABELS)}
            first = {lab: arr[i, 1] for i, lab in enumerate(LABELS)}
            result.copy.append(CopyCell(name, scheme, T, T, [int(d) for d in rec["distances"]], gain, first,
                                        s.copy_length))
        train_lens.add(T)
    result.train_len = min(train_lens)
    result.labels = list(LABELS)
    return result


__all__ = ["LABELS", "LabSettings", "assemble", "loss_result", "nll_trace", "run_lab", "unit_cell", "unit_copy", "unit_loss"]
