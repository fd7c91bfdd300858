"""Per-label statistics of factor 3: every window's layers, and the probe fitted across windows.

`label_stats` gathers, for one run label, each hidden layer's per-window geometry against the
reference label's in-range bulk (`analyze.manifold`) and the grouped position probes
(`analyze.probe`): the in-range bulk, the first tokens, and at the best layer the shuffled null.

Example:
    >>> s = PositionStats("baseline", np.arange(4), [[LayerSubspace(1, probe_r2=0.5)]], best_layer=1)
    >>> s.values("probe_r2", 1).tolist(), s.layer_ids
    ([0.5], [1])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lminf_diag.analyze.base import downsample_index
from lminf_diag.analyze.hidden_stats import LayerSubspace, layer_states, massive_mask, pca_view, summary_angle
from lminf_diag.analyze.manifold import layer_geometry
from lminf_diag.analyze.probe import grouped_probe, median_range, shuffled

PROBE_POINTS = 256  # in-range states per window and layer given to the probe (evenly spaced)
VIEW_POINTS = 400  # points per PCA panel (window 0)


@dataclass
class PositionStats:
    """One label: `windows[w]` holds one LayerSubspace per analysed hidden layer of window w."""

    label: str
    positions: np.ndarray  # (M,) positions of window 0's hidden states
    windows: list[list[LayerSubspace]] = field(default_factory=list)  # W x K
    best_layer: int | None = None  # hidden layer with the highest median held-out bulk R²

    @property
    def layers(self) -> list[LayerSubspace]:
        """Window 0's layers (PCA view, distance profile)."""
        return self.windows[0] if self.windows else []

    @property
    def layer_ids(self) -> list[int]:
        return sorted({ly.hidden_layer for w in self.windows for ly in w})

    def values(self, name: str, layer: int) -> np.ndarray:
        """(W,) one field of one hidden layer, per window (NaN where absent)."""
        out = np.full(len(self.windows), np.nan)
        for i, w in enumerate(self.windows):
            ly = next((ly for ly in w if ly.hidden_layer == layer), None)
            if ly is not None:
                v = getattr(ly, name)
                out[i] = summary_angle(v) if isinstance(v, np.ndarray) else float(v)
        return out

    def per_window(self, fn, deep: bool = False) -> np.ndarray:
        """(W,) median over layers (layers >= 1 when deep and any exist) of fn(LayerSubspace) per window."""
        ids = [k for k in self.layer_ids if k >= 1] if deep else []
        ids = ids or self.layer_ids
        out = np.full(len(self.windows), np.nan)
        for i, w in enumerate(self.windows):
            vals = np.array([fn(ly) for ly in w if ly.hidden_layer in ids], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            out[i] = float(np.median(vals)) if vals.size else np.nan
        return out


def _probe_data(x, pos, keep, seed_points: int = PROBE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(keep)[0]
    idx = idx[downsample_index(idx.size, seed_points)]
    return x[idx], np.log(pos[idx] + 1.0)


def label_stats(lab, windows, ref, layers, tl, bound, args) -> PositionStats:
    traces = [w[lab] for w in windows]
    avail = [int(k) for k in np.asarray(traces[0].hidden_layers)]
    wanted = avail if layers is None else [k for k in layers if k in avail]
    per_win: list[list[LayerSubspace]] = [[] for _ in windows]
    bulk: dict[int, tuple[list, list]] = {}
    for k in wanted:
        xs, ys, xf, yf = [], [], [], []
        for i, (w, t) in enumerate(zip(windows, traces, strict=True)):
            ly = LayerSubspace(hidden_layer=k)
            if k not in np.asarray(t.hidden_layers) or not np.asarray(t.hidden).size:
                xs.append(np.empty((0, 1)))
                ys.append(np.empty(0))
                xf.append(np.empty((0, 1)))
                yf.append(np.empty(0))
                per_win[i].append(ly)
                continue
            x, pos = layer_states(t, k)  # (M, D), (M,)
            big = massive_mask(x, pos, bound)
            end = tl if tl is not None else int(pos.max(initial=0)) + 1
            a, b = _probe_data(x, pos, (pos >= bound) & (pos < end) & ~big)
            xs.append(a)
            ys.append(b)
            a, b = _probe_data(x, pos, (pos >= 1) & (pos < min(bound, end)) & ~big)
            xf.append(a)
            yf.append(b)
            rt = w[ref]
            if k in np.asarray(rt.hidden_layers) and np.asarray(rt.hidden).size:
                rx, rpos = layer_states(rt, k)
                g = layer_geometry(rx, rpos, x, pos, bound=bound, train_len=tl, k=args["k"],
                                   first_tokens=args["first_tokens"])  # fmt: skip
                ly.distance_profile = np.full(np.asarray(t.hidden_positions).size, np.nan)
                ok = np.isin(np.asarray(t.hidden_positions), pos)
                ly.distance_profile[ok] = g.distance_profile
                ly.first_token_distance, ly.off_manifold = g.first_token_distance, g.off_manifold
                ly.principal_angles, ly.null_angles, ly.n_massive = (
                    g.principal_angles,
                    g.null_angles,
                    g.n_massive,
                )
            if i == 0:
                ev, coords, cpos, rng = pca_view(x, pos, (pos >= bound) & ~big, args["k"], bound, VIEW_POINTS)
                ly.explained_variance, ly.coords, ly.coord_positions, ly.coord_range = ev, coords, cpos, rng
            per_win[i].append(ly)
        for i, v in enumerate(grouped_probe(xs, ys)):
            per_win[i][-1].probe_r2 = float(v)
        for i, v in enumerate(grouped_probe(xf, yf)):
            per_win[i][-1].probe_r2_first = float(v)
        bulk[k] = (xs, ys)
    stats = PositionStats(label=lab, positions=np.asarray(traces[0].hidden_positions), windows=per_win)
    meds = {k: median_range(stats.values("probe_r2", k))[0] for k in wanted}
    finite = {k: v for k, v in meds.items() if np.isfinite(v)}
    if finite:
        stats.best_layer = max(finite, key=lambda k: (finite[k], -k))
    elif wanted:
        stats.best_layer = wanted[0]
    if stats.best_layer is not None:  # the shuffled-position null, at the layer the key figure reads
        xs, ys = bulk[stats.best_layer]
        j = wanted.index(stats.best_layer)
        for i, v in enumerate(grouped_probe(xs, shuffled(ys, seed=0))):
            per_win[i][j].probe_r2_null = float(v)
    return stats
