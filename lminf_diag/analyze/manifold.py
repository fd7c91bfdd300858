"""Where one label's hidden states sit relative to ONE fixed reference: the baseline's in-range bulk.

For one window and one hidden layer (`layer_geometry`):

- reference bulk R: the baseline's states at positions [b, T) of the same window (massive
  activations left out); its centroid c and RMS spread r = sqrt(mean ||x - c||^2);
- distance profile: ||x - c|| / r for every state of the label; *first-token distance*: its mean
  over positions < first_tokens. The reference does not depend on the label, so identical first
  tokens give identical distances in every run;
- *off-manifold ratio*: R split at its median position into R1 (early) and R2 (late). Features are
  standardised with R1's mean and std; the median distance of the label's states past T to their
  nearest R1 state, divided by the same median for R2 (held-out in-range baseline states, the
  null: 1 when past-T states look like unseen in-range ones). R2 is closer in the text to R1 than
  the states past T are, so content drift alone can lift the ratio a little above 1: compare a
  label with `lambda` on the same tokens (the paired contrast in `positions`);
- principal angles (degrees) between the top-k PCA subspaces of the label's in-range bulk first
  half and its states past T (count-matched to the second half), next to their null: the angles
  between the two in-range halves.

Example:
    >>> rng = np.random.default_rng(0)
    >>> pos = np.arange(256)
    >>> x = rng.normal(size=(256, 16))
    >>> g = layer_geometry(x, pos, x, pos, bound=16, train_len=128, first_tokens=4, k=2)
    >>> 0.8 < g.off_manifold < 1.25
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lminf_diag.analyze.base import downsample_index
from lminf_diag.analyze.hidden_stats import (
    centroid_spread,
    massive_mask,
    mean_angles,
    nn_distance,
    standardizer,
)

MAX_QUERY = 512  # states past T scored per window and layer (evenly spaced)
MIN_REFERENCE = 4  # fewer reference states than this: the statistics are NaN


@dataclass
class Geometry:
    """The per-(window, layer) geometry of one label against the baseline's in-range bulk."""

    distance_profile: np.ndarray  # (M,) distance from the reference centroid, in reference RMS spreads
    first_token_distance: float = float("nan")
    off_manifold: float = float("nan")
    principal_angles: np.ndarray = field(default_factory=lambda: np.empty(0))  # (k,)
    null_angles: np.ndarray = field(default_factory=lambda: np.empty(0))  # (k,)
    n_massive: int = 0


def split_halves(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (early, late) of the rows, split at the median position (late gets the rest).

    >>> [m.tolist() for m in split_halves(np.array([5, 6, 7, 8]))]
    [[True, True, False, False], [False, False, True, True]]
    """
    order = np.argsort(pos, kind="stable")
    early = np.zeros(len(pos), bool)
    early[order[: len(pos) // 2]] = True
    return early, ~early


def off_manifold_ratio(ref: np.ndarray, ref_pos: np.ndarray, query: np.ndarray) -> float:
    """Median NN distance of `query` rows to R1 over that of R2 to R1 (standardised on R1; NaN if undefined)."""
    if len(ref) < MIN_REFERENCE or not len(query):
        return float("nan")
    early, late = split_halves(ref_pos)
    mu, sd = standardizer(ref[early])
    r1 = (ref[early] - mu) / sd
    null = float(np.median(nn_distance((ref[late] - mu) / sd, r1)))
    q = query[downsample_index(len(query), MAX_QUERY)]
    beyond = float(np.median(nn_distance((q - mu) / sd, r1)))
    return beyond / null if null > 0 else float("nan")


def layer_geometry(
    ref_x: np.ndarray,
    ref_pos: np.ndarray,
    x: np.ndarray,
    pos: np.ndarray,
    *,
    bound: int,
    train_len: int | None,
    first_tokens: int,
    k: int,
) -> Geometry:
    """Geometry of one label's states x (M, D) at pos (M,) against the baseline's ref_x (M0, D) at ref_pos."""
    tl = int(train_len) if train_len is not None else int(max(pos.max(initial=0), ref_pos.max(initial=0))) + 1
    ref_x = np.asarray(ref_x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    in_ref = (ref_pos >= bound) & (ref_pos < tl) & ~massive_mask(ref_x, ref_pos, bound)
    big = massive_mask(x, pos, bound)
    out = Geometry(distance_profile=np.full(len(pos), np.nan), n_massive=int(big.sum()))
    if in_ref.sum() < MIN_REFERENCE:
        return out
    centre, spread = centroid_spread(ref_x[in_ref])
    if spread > 0:
        out.distance_profile = np.linalg.norm(x - centre, axis=1) / spread
        head = pos < first_tokens
        if head.any():
            out.first_token_distance = float(np.mean(out.distance_profile[head]))
    past = pos >= tl
    out.off_manifold = off_manifold_ratio(ref_x[in_ref], ref_pos[in_ref], x[past])
    own = (pos >= bound) & (pos < tl) & ~big
    early, late = split_halves(pos[own])
    a, b = x[own][early], x[own][late]
    out.null_angles = mean_angles(a, b, k)
    beyond = np.nonzero(past & ~big)[0]
    if beyond.size and len(b):
        out.principal_angles = mean_angles(a, x[beyond[downsample_index(beyond.size, len(b))]], k)
    return out
