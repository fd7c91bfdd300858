"""`run_lab`: the three OOD factors and the loss past the training length, for every lab model.

For each model and each multiple m of its training length T, one window of m*T bytes of the
held-out book runs plain and with LM-Infinite (n_local = T) under capture; the four analyzers
give the key figures. One more pass per model, without capture, reads the loss at every
position to `fluency_multiple` x T (averaged over `fluency_windows` windows of the text),
giving how far each scheme stays fluent. Every finished
(model, length) is kept in the run folder, so an interrupted run resumes.

Example:
    >>> result = run_lab(LabSettings(models=("lab-rope",), multiples=(8,), fluency_multiple=16))  # doctest: +SKIP
    >>> result.summary()["lab-rope baseline"]["nll_ratio"] > 1.2  # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.lab.result import Fluency, LabCell, LabResult
from lminf_diag.lab.specs import HELD_OUT_BOOK, lab_names, lab_spec

LABELS = ("baseline", "lambda")


@dataclass(frozen=True)
class LabSettings:
    """What `run_lab` runs: which models, at which multiples of T, on which text."""

    models: tuple[str, ...] = tuple(lab_names())
    multiples: tuple[int, ...] = (8, 32, 128)
    fluency_multiple: int = 128  # the fluency curve reads the loss to this multiple of T
    text: str = HELD_OUT_BOOK
    n_global: int = 10
    tolerance: float = 0.10  # "fluent": bin loss at most (1 + tolerance) x the in-range loss
    bins_per_octave: int = 4
    fluency_windows: int = 2  # the loss by position is averaged over this many windows of the text

    def check(self) -> None:
        """Clear errors for settings that cannot run."""
        for name in self.models:
            lab_spec(name)
        if not self.multiples or any(int(m) < 2 for m in self.multiples):
            raise InvalidArgumentError(f"multiples {self.multiples}: give at least one, each >= 2 (x T)")
        if self.fluency_multiple < 2:
            raise InvalidArgumentError(f"fluency_multiple {self.fluency_multiple} must be >= 2 (x T)")
        if self.fluency_windows < 1:
            raise InvalidArgumentError(f"fluency_windows {self.fluency_windows} must be >= 1")
        if not 0 < self.tolerance < 10:
            raise InvalidArgumentError(f"tolerance {self.tolerance} must be a fraction such as 0.1")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def entropy_curve(result: Any, max_points: int = 300) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(n, {label: mean entropy}) of an `EntropyGrowthResult`, thinned on a log axis."""
    from lminf_diag.analyze.base import downsample_index

    first = next(iter(result.per_label.values()))
    idx = downsample_index(first.n.size, max_points, log=True)
    return first.n[idx], {lab: s.mean_entropy[idx] for lab, s in result.per_label.items()}


def cell_figures(cmp: Any) -> tuple[dict[str, dict[str, float]], Any]:
    """Key figures per label from the analyzers and the traces' losses; and the entropy result."""
    from lminf_diag.analyze import entropy_growth, logit_explosion, position_subspaces

    growth = entropy_growth(cmp, per_head=False)
    ent, lg, pos = growth.summary(), logit_explosion(cmp).summary(), position_subspaces(cmp).summary()
    out = {}
    for lab, trace in cmp.traces.items():
        T = trace.meta.train_len
        within, beyond = in_range_loss(trace.nll, T), float(np.nanmean(trace.nll[T:]))
        out[lab] = {
            "entropy_slope_within": ent[lab]["slope_within"],
            "entropy_slope_beyond": ent[lab]["slope_beyond"],
            "logit_envelope_ratio": lg[lab]["envelope_ratio"],
            "logit_excess": lg[lab]["excess"],
            "position_probe_r2": pos[lab]["probe_r2"],
            "first_token_distance": pos[lab]["first_token_distance"],
            "nll_within": within,
            "nll_beyond": beyond,
            "nll_ratio": beyond / within if within else float("nan"),
        }
    return out, growth


def in_range_loss(nll: np.ndarray, train_len: int) -> float:
    """Mean loss over positions [T/2, T): inside the training length, with ample context.

    (The first tokens of a window have little context and a high loss; leaving them out makes
    "beyond / within" compare like with like.)

    >>> in_range_loss(np.r_[np.full(64, 9.0), np.full(64, 1.0), np.full(128, 3.0)], 128)
    1.0
    """
    return float(np.nanmean(np.asarray(nll, dtype=np.float64)[train_len // 2 : train_len]))


def fluency_curves(nll: dict[str, np.ndarray], train_len: int, tolerance: float,
                   bins_per_octave: int = 4) -> tuple[np.ndarray, dict, dict, dict]:
    """Bin per-position losses on a log axis; in-range reference and how far each label stays fluent.

    Returns (bin_end, {label: bin means}, {label: reference}, {label: fluent_until}). The
    reference is `in_range_loss`, the mean over positions [T/2, T); a label is fluent up to the first bin
    past T whose mean exceeds (1 + tolerance) x its reference (the whole length if none does).

    >>> nll = {"flat": np.full(1024, 1.0), "rising": np.r_[np.ones(128), np.full(896, 3.0)]}
    >>> _, _, ref, until = fluency_curves(nll, 128, 0.1)
    >>> ref["flat"], until["flat"], until["rising"]
    (1.0, 1024, 128)
    """
    n = len(next(iter(nll.values())))
    edges = np.unique(np.geomspace(max(2, train_len // 8), n, int(np.log2(n / max(2, train_len // 8))
                                                                     * bins_per_octave) + 1).astype(int))
    edges = np.unique(np.r_[edges, train_len])  # a bin boundary at T
    curves, refs, until = {}, {}, {}
    for lab, arr in nll.items():
        arr = np.asarray(arr, dtype=np.float64)
        means = np.array([np.nanmean(arr[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)])
        ref = in_range_loss(arr, train_len)
        bad = [a for (a, b), m in zip(zip(edges[:-1], edges[1:], strict=True), means, strict=True)
               if a >= train_len and m > (1 + tolerance) * ref]
        curves[lab], refs[lab], until[lab] = means, ref, int(bad[0]) if bad else int(n)
    return edges[1:] - 1, curves, refs, until


def in_range_probe(model: Any, train_len: int, windows: int = 24, shuffle: bool = False) -> np.ndarray:
    """Position probe R² per hidden layer within the training length: (layers + 1,), 0 = embeddings.

    Hidden states of `windows` windows of the held-out book (BOS + T-1 bytes each, so T
    positions) are stacked, and a cross-validated linear probe reads log-position from them
    (`analyze.hidden_stats.layer_subspace`). `shuffle=True` permutes the positions: a control
    that should give R² near 0.
    """
    import torch

    from lminf_diag.analyze.hidden_stats import layer_subspace
    from lminf_diag.lab.train import held_out_windows

    ids = held_out_windows(train_len - 1, windows)  # (W, T)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states  # (layers + 1) x (W, T, D)
    pos = np.tile(np.arange(ids.shape[1]), ids.shape[0])
    if shuffle:
        pos = np.random.default_rng(0).permutation(pos)
    args = {"n_components": 2, "first_tokens": 4, "window": None, "train_len": None}
    return np.array([layer_subspace(h.reshape(-1, h.shape[-1]).float().numpy(), pos, i, args).probe_r2
                     for i, h in enumerate(hidden)])


def _load(name: str) -> tuple[Any, Any, int]:
    from lminf_diag.models import load_model, model_info

    model, tok = load_model(name)
    return model, tok, int(model_info(model).train_len)


def run_lab(settings: LabSettings = LabSettings(), run_dir: Any = None, progress: Any = None) -> LabResult:
    """Run every (model, multiple) comparison and each model's fluency pass; a `LabResult`.

    `run_dir`: a `RunDir` or folder keeping finished cells (resume); `progress`: a factory such
    as `lminf_diag.cli.progress.Progress` (called with the number of steps).
    """
    import torch

    from lminf_diag.capture.compare import auto_stride, compare
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.data import load_text, token_window
    from lminf_diag.evaluate.cells import CellStore, Steps
    from lminf_diag.patch import lm_infinite, through_kernel

    settings.check()
    store = CellStore(run_dir, "lab", settings.to_dict())
    steps = Steps(progress, len(settings.models) * (len(settings.multiples) + 1))
    text, source = load_text(settings.text)
    cells, fluency, train_lens = [], [], set()
    for name in settings.models:
        model, tok, T = _load(name)
        train_lens.add(T)
        scheme = lab_spec(name).scheme
        for m in sorted(set(int(m) for m in settings.multiples)):
            key, length = f"{name}/{m}x", m * T
            saved = store.load(key)
            if saved is None:
                with steps.step(f"{name} at {length} tokens ({m}x T), plain and LM-Infinite"):
                    t0 = time.perf_counter()
                    ids = token_window(tok, text, length, repeat=True)
                    cmp = compare(model, input_ids=ids, modes=("lambda",), n_global=settings.n_global,
                                  n_local=T, stride=auto_stride(length), text_source=source)
                    figs, ent = cell_figures(cmp)
                    n, curves = entropy_curve(ent)
                    saved = {"figures": figs, "labels": list(curves),
                             "array": np.stack([n.astype(np.float64)] + [curves[k] for k in curves])}
                    store.save(key, {"figures": figs, "labels": list(curves)}, saved["array"],
                               seconds=time.perf_counter() - t0)
            else:
                steps.skip(f"{name} at {length} tokens")
            arr = saved["array"]
            cells.append(LabCell(name, scheme, m, length, saved["figures"], arr[0],
                                 dict(zip(saved["labels"], arr[1:], strict=True))))
        key, length = f"{name}/fluency", settings.fluency_multiple * T
        saved = store.load(key)
        if saved is None:
            with steps.step(f"{name}: loss at every position to {length} tokens, plain and LM-Infinite"):
                t0 = time.perf_counter()
                n_text = len(tok(text, add_special_tokens=False)["input_ids"])
                room = max(0, n_text - length)
                base, patched = [], []
                for w in range(settings.fluency_windows):  # evenly spaced windows, averaged
                    offset = room * w // max(1, settings.fluency_windows - 1)
                    ids = token_window(tok, text, length, offset=offset, repeat=room == 0)
                    with torch.no_grad(), through_kernel(model):  # bounded memory for eager ALiBi too
                        base.append(token_nll(model, ids))
                        with lm_infinite(model, n_global=settings.n_global, n_local=T):
                            patched.append(token_nll(model, ids))
                probe = float(np.max(in_range_probe(model, T)[1:]))
                saved = {"array": np.stack([np.mean(base, 0), np.mean(patched, 0)]), "probe": probe}
                store.save(key, {"labels": list(LABELS), "probe": probe}, saved["array"],
                           seconds=time.perf_counter() - t0)
        else:
            steps.skip(f"{name} fluency to {length} tokens")
        ends, curves, refs, until = fluency_curves(dict(zip(LABELS, saved["array"], strict=True)), T,
                                                   settings.tolerance, settings.bins_per_octave)
        fluency.append(Fluency(name, scheme, T, length, ends, curves, refs, until, settings.tolerance,
                               probe_r2_in_range=float(saved["probe"])))
        del model
    return LabResult(cells=cells, fluency=fluency, train_len=min(train_lens), settings=settings.to_dict())
