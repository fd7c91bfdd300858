"""Per-layer statistics of hidden states: PCA, distance from the bulk, position probe, subspace angles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import randomized_svd

from lminf_diag.analyze.base import MAX_POINTS, as_float, downsample_index

MIN_PROBE_POINTS = 10
MAX_PROBE_POINTS = 1000  # evenly spaced over the stored positions


@dataclass
class LayerSubspace:
    """One hidden layer of one label."""

    hidden_layer: int  # 0 = embeddings, i = after layer i
    explained_variance: np.ndarray  # (n_components,) ratios
    coords: np.ndarray  # (S, 2) first two PCA coordinates of <= 2000 sampled points
    coord_positions: np.ndarray  # (S,) their positions
    distance_profile: np.ndarray  # (M,) distance from the bulk centroid, in bulk RMS units
    first_token_distance: float
    probe_r2: float
    principal_angles: np.ndarray  # (n_components,) degrees, or empty


def _subspace(x: np.ndarray, k: int) -> np.ndarray | None:
    """(D, k) orthonormal basis of the top-k principal directions of x (rows), None if too few rows."""
    if x.shape[0] <= k:
        return None
    if min(x.shape) <= 4 * k:
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    else:  # top-k only: far cheaper than a full SVD of an (m, 4096) window
        _, _, vt = randomized_svd(x - x.mean(0), k, n_iter=10, random_state=0)
    return vt[:k].T.astype(np.float64)


def layer_subspace(x: np.ndarray, pos: np.ndarray, k: int, args: dict) -> LayerSubspace:
    """Everything for one (M, D) float32 matrix of hidden states at positions pos (M,).

    PCA and subspaces run in float32; the probe (float64) uses at most MAX_PROBE_POINTS states.
    args: n_components, first_tokens, window (tokens or None), train_len (tokens or None).

    >>> from tests.synthetic import make_trace
    >>> t = make_trace(n=256, train_len=64)
    >>> args = {"n_components": 2, "first_tokens": 4, "window": None, "train_len": 64}
    >>> ly = layer_subspace(t.hidden[0].astype(np.float32), t.hidden_positions, 0, args)
    >>> ly.probe_r2 > 0.9, ly.principal_angles.shape
    (True, (2,))
    """
    ncomp = max(1, min(max(args["n_components"], 2), x.shape[0], x.shape[1]))
    pca = PCA(n_components=ncomp, random_state=0)
    proj = pca.fit_transform(x)  # (M, ncomp)
    if proj.shape[1] < 2:
        proj = np.column_stack([proj, np.zeros(len(proj))])
    head = np.arange(min(args["first_tokens"], len(pos)))  # always show the first tokens
    sample = np.union1d(head, downsample_index(len(pos), MAX_POINTS - head.size))  # (S,) <= MAX_POINTS
    first = pos < args["first_tokens"]
    bulk = x[~first].astype(np.float64)
    if bulk.shape[0] >= 2:
        centre = bulk.mean(0)
        rms = float(np.sqrt(np.mean(np.sum((bulk - centre) ** 2, axis=1))))
        prof = (
            np.linalg.norm(x.astype(np.float64) - centre, axis=1) / rms
            if rms > 0
            else np.full(len(pos), np.nan)
        )
    else:
        prof = np.full(len(pos), np.nan)
    r2 = float("nan")
    if len(pos) >= MIN_PROBE_POINTS:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 8)))
        cv = KFold(n_splits=5, shuffle=True, random_state=0)
        sub = downsample_index(len(pos), MAX_PROBE_POINTS)  # RidgeCV costs O(m^3): cap m
        xs, ys = x[sub].astype(np.float64), np.log(pos[sub] + 1.0)
        r2 = float(np.mean(cross_val_score(model, xs, ys, cv=cv, scoring="r2")))
    angles = np.empty(0)
    tl, w, nc = args["train_len"], args["window"], args["n_components"]
    if tl is not None and (pos >= tl).any():
        lo_in = args["first_tokens"] if w is None else max(args["first_tokens"], tl - w)
        lo_out = tl if w is None else max(tl, int(pos.max()) + 1 - w)
        a = _subspace(x[(pos >= lo_in) & (pos < tl)], nc)
        b = _subspace(x[pos >= lo_out], nc)
        if a is not None and b is not None:
            angles = np.degrees(subspace_angles(a, b))
    return LayerSubspace(
        hidden_layer=k,
        explained_variance=pca.explained_variance_ratio_[: args["n_components"]].copy(),
        coords=proj[sample, :2],
        coord_positions=pos[sample],
        distance_profile=prof,
        first_token_distance=as_float(np.mean(prof[first])) if first.any() else float("nan"),
        probe_r2=r2,
        principal_angles=angles,
    )
