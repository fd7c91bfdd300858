"""Factors 1 and 2: paired, count-matched, replicated statistics against hand-computed truth, and
the estimate/verdict machinery (interval coverage at the nominal rate, the verdict rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lminf_diag.analyze import entropy_growth, logit_explosion
from lminf_diag.analyze.entropy_stats import attended_counts
from lminf_diag.analyze.estimate import Estimate, decide, estimate, proportion, t_interval, wilson
from lminf_diag.analyze.fit import fit_log
from lminf_diag.analyze.logit_stats import paired_excess, used_shift
from lminf_diag.attention.stats import pair_anchors
from lminf_diag.capture.windows import Replicate, as_windows
from lminf_diag.errors import InvalidArgumentError
from tests.synthetic import make_comparison, make_trace, planted_growth


def test_t_interval_matches_hand_formula():
    v = np.array([1.3, 0.7, 1.1, 0.9, 1.6])
    m, lo, hi, n = t_interval(v)
    half = 2.7764451051977987 * v.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert (m, n) == (pytest.approx(v.mean()), 5)
    assert (lo, hi) == (pytest.approx(v.mean() - half), pytest.approx(v.mean() + half))
    assert math.isnan(t_interval([2.0])[1])  # one window: no interval


def test_wilson_matches_hand_formula():
    z = 1.959963984540054
    k, n = 12, 20
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(k, n)[1:] == (pytest.approx(centre - half), pytest.approx(centre + half))
    e = proportion(0, 8)
    assert e.estimate == 0 and e.ci_low == 0 and 0.3 < e.ci_high < 0.33  # 0/8: upper bound 0.32


def test_verdict_rule():
    assert decide(Estimate("x", "b", 1.0, 0.3, 1.7, 4), 0.1) == "present"
    assert decide(Estimate("x", "b", 0.0, -0.05, 0.05, 4), 0.1) == "absent"
    assert decide(Estimate("x", "b", 0.2, -0.3, 0.7, 4), 0.1) == "inconclusive"
    assert decide(Estimate("x", "b", 5.0, math.nan, math.nan, 1), 0.1) == "inconclusive"


def test_interval_covers_a_known_slope_at_the_nominal_rate():
    """Windows of entropy = a_w + b ln x + noise, a_w a per-window random level and b a per-window
    random slope around 0.7: the interval between windows covers 0.7 in about 95% of 400 repeats."""
    rng = np.random.default_rng(0)
    x = np.geomspace(100, 400, 40)
    covered = 0
    for _ in range(400):
        slopes = []
        for _w in range(5):
            b = 0.7 + 0.1 * rng.normal()
            y = rng.normal() + b * np.log(x) + 0.05 * rng.normal(size=x.size)
            slopes.append(fit_log(x, y).slope)
        e = estimate(slopes)
        covered += e.ci_low <= 0.7 <= e.ci_high
    assert 0.91 <= covered / 400 <= 0.99


def test_attended_counts_match_a_brute_force_mask():
    n, n_local, n_global = 40, 12, 3
    pos = np.arange(n)
    d = pos[:, None] - pos[None, :]
    for mode in ("lambda", "mask_only", "window", "cap_only"):
        local = (d >= 0) & (d < n_local)
        far = (d >= n_local) & ((pos[None, :] < n_global) if mode != "cap_only" else (d >= n_local))
        if mode == "window":
            far = np.zeros_like(far)
        want = (local | far).sum(1)
        got = attended_counts(pos, {"mode": mode, "n_local": n_local, "n_global": n_global})
        np.testing.assert_array_equal(got, want, err_msg=mode)
    np.testing.assert_array_equal(attended_counts(pos, None), pos + 1)


def test_paired_excess_equals_planted_growth_over_the_band():
    """Planted logit = base + g log2(max(d, T)/T): its max over (T, T+m] is at T+m, over (T-m, T]
    it is base, so the paired excess is mean(g) log2((T+m)/T); at T/2 both bands are in range: 0."""
    T, n = 128, 512
    t = make_trace(n=n, train_len=T)
    (lo, p, hi) = pair_anchors(T)[T]
    value, heads, rows = paired_excess(t, T, hi - p)
    g = planted_growth(2, 3)
    assert value == pytest.approx(g.mean() * math.log2(hi / T), rel=1e-5)
    np.testing.assert_allclose(heads, g * math.log2(hi / T), rtol=1e-5)
    assert rows == int((t.profile_rows >= hi).sum())
    assert paired_excess(t, T // 2, (hi - p) // 1)[0] == pytest.approx(0.0, abs=1e-6)


def test_used_shift_is_hand_computed_row_means():
    T = 128
    t = make_trace(n=512, train_len=T)
    m = T // 8
    pos = t.positions
    after, before = (pos > T + m) & (pos <= 2 * T), (pos > T // 2) & (pos <= T)
    want = t.max_logit[..., after].mean() - t.max_logit[..., before].mean()
    assert used_shift(t, T, m) == pytest.approx(float(want), rel=1e-5)


def test_planted_explosion_is_present_and_the_mask_absent_over_noisy_windows():
    windows = [make_comparison(n=512, train_len=128, seed=s, growth=8, window_noise=0.2) for s in range(5)]
    r = logit_explosion(windows)
    verdicts = {v.label: v.verdict for v in r.verdicts()}
    assert verdicts == {"baseline": "present", "lambda": "absent"}
    head = r.key_figures()[0]
    assert head.label == "baseline" and head.n == 5 and head.ci_low < head.estimate < head.ci_high
    assert all(e.unit == "logit units" for e in r.key_figures())
    assert "by construction" not in " ".join(r.findings()) and len(r.findings()) == 2
    assert r.top_heads_frame().iloc[0][["layer", "head"]].tolist() == [1, 2]  # the largest planted g


def test_one_window_is_inconclusive_never_present():
    r = logit_explosion(make_comparison(n=512, train_len=128, growth=20))
    assert [v.verdict for v in r.verdicts()] == ["inconclusive", "inconclusive"]
    assert all("only one window" in line for line in r.findings())


def test_uniform_attention_has_no_entropy_growth_beyond_its_null():
    """Uniform attention over x keys: entropy = ln x exactly, slope 1 past T and 1 below: net 0."""
    r = entropy_growth([make_comparison(n=512, train_len=128, seed=s) for s in range(3)])
    est = {(e.label, e.figure): e for e in r.key_figures()}
    assert est[("baseline", "entropy slope past T")].estimate == pytest.approx(1.0, abs=1e-5)
    assert est[("baseline", "entropy slope below T (null)")].estimate == pytest.approx(1.0, abs=1e-5)
    assert {v.label: v.verdict for v in r.verdicts()}["baseline"] == "absent"
    # the flat run is compared with the baseline at an equal attended count, not by its slope
    assert ("lambda", "entropy slope past T") not in est
    gap = est[("lambda", "entropy gap at equal attended count")]
    # flat: ln(T) past T; baseline rows with T + 4 - 16 < x <= T + 4 keys: mean of ln x
    x = np.arange(128 + 4 - 16 + 1, 128 + 4 + 1)
    assert gap.estimate == pytest.approx(np.log(128) - np.log(x).mean(), abs=2e-3)


def test_entropy_growth_past_t_is_detected():
    """A run whose entropy grows by 1.5 ln x past T but 0.5 ln x below it: net 1.0, present."""
    windows = []
    for s in range(4):
        c = make_comparison(n=1024, train_len=128, seed=s)
        b = c.traces["baseline"]
        x = b.positions + 1.0
        rng = np.random.default_rng(s)
        y = np.where(x <= 128, 0.5 * np.log(x), 0.5 * np.log(128) + 1.5 * np.log(x / 128)) + 0.02 * rng.normal(size=x.size)
        b.entropy = np.broadcast_to(y, b.entropy.shape).astype(np.float32)
        windows.append(c)
    r = entropy_growth(windows)
    net = r.key_figures()[0]
    assert net.figure == "entropy slope past T, net of null"
    assert net.estimate == pytest.approx(1.0, abs=0.05)
    assert {v.label: v.verdict for v in r.verdicts()}["baseline"] == "present"


def test_replicate_round_trip_and_label_checks(tmp_path):
    rep = Replicate([make_comparison(n=64, train_len=16, seed=s) for s in range(3)])
    back = Replicate.load(rep.save(tmp_path / "rep"))
    assert back.labels == rep.labels and len(back) == 3
    np.testing.assert_array_equal(back[2].baseline.entropy, rep[2].baseline.entropy)
    with pytest.raises(InvalidArgumentError, match="same runs"):
        Replicate([make_comparison(n=64, train_len=16), {"baseline": make_trace(n=64, train_len=16)}])
    assert len(as_windows(rep)) == 3


@torch.no_grad()
def test_lab_nope_shows_no_logit_explosion():
    """The lab model without position encoding cannot score keys by distance: not `present`."""
    import lminf_diag as ld
    from lminf_diag.capture.windows import plan_windows
    from lminf_diag.data import list_books

    model, tok = ld.load_model("lab-nope")
    windows = []
    for _w, ids in plan_windows(tok, list_books(), 512, 6):
        windows.append(ld.compare(model, input_ids=ids, modes=(), hidden_layers=[], stride=2))
    r = logit_explosion(windows)
    assert r.verdicts()[0].verdict != "present", r.findings()
