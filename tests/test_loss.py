"""Loss past T: re-computed reference vs a naive per-token loop, bins to the end, sustained crossing
with censoring, interval coverage, verdicts net of the reference, and the paragraph-shuffled control."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lminf_diag.analyze.fluency import (
    binned_loss,
    censored_median,
    loss_bin_edges,
    sustained_crossing,
    window_fluency,
)
from lminf_diag.analyze.loss import CLASSICS, GAP, NET_REF, RISE, LossResult
from lminf_diag.analyze.perplexity import perplexity_by_position
from lminf_diag.data import load_text
from lminf_diag.data.control import paragraphs, shuffle_paragraphs, shuffled_window
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate import perplexity_over_documents
from lminf_diag.evaluate.recompute import recompute_nll
from lminf_diag.patch import lm_infinite

from .synthetic import make_comparison
from .tiny import tiny_model

N, T = 64, 16


# ---------------------------------------------------------------- the re-computed reference


def _naive(model, ids, context) -> np.ndarray:
    """nll[t] from full logits of a fresh pass over the `context(t)` tokens before t (a per-token loop)."""
    out = np.full(ids.shape[1], np.nan)
    with torch.no_grad():
        for t in range(1, ids.shape[1]):
            ctx = context(t)
            logits = model(ids[:, t - ctx : t]).logits[0, -1].double()
            out[t] = -torch.log_softmax(logits, -1)[ids[0, t]].item()
    return out


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 128, (1, N), generator=torch.Generator().manual_seed(3))


def test_recompute_stride_one_is_exactly_the_last_t_tokens(llama, ids):
    got = recompute_nll(llama, ids, T, stride=1)
    want = _naive(llama, ids, lambda t: min(t, T))  # tokens < T: full context; past T: the last T
    assert np.isnan(got.nll[0])
    np.testing.assert_allclose(got.nll[1:], want[1:], atol=1e-5)
    assert (got.context_min, got.context_max) == (T, T) and got.forward_passes == 1 + (N - T)
    assert got.forward_tokens == T + (N - T) * T and got.seconds >= 0 and "forward passes" in got.cost_text()


@pytest.mark.parametrize("context", ["in_range", "at_least_T"])
def test_recompute_strided_context_bounds(llama, ids, context):
    s = 4

    def ctx(t):
        if t < T:
            return t
        c = T + (t - T) // s * s  # the chunk's first target
        e = min(c + s, N)
        return t - (e - 1 - T) if context == "in_range" else T + (t - c)

    got = recompute_nll(llama, ids, T, stride=s, context=context, batch=5)
    np.testing.assert_allclose(got.nll[1:], _naive(llama, ids, ctx)[1:], atol=1e-5)
    lo, hi = (T - s + 1, T) if context == "in_range" else (T, T + s - 1)
    assert (got.context_min, got.context_max) == (lo, hi)
    per_pass = T if context == "in_range" else T + s - 1
    assert got.forward_passes == 1 + (N - T) // s and got.forward_tokens == T + (N - T) // s * per_pass
    # tokens < T keep their ordinary loss: the plain model's
    with torch.no_grad():
        plain = torch.log_softmax(llama(ids).logits[0].double(), -1)
    ordinary = -plain[torch.arange(T - 1), ids[0, 1:T]].numpy()
    np.testing.assert_allclose(got.nll[1:T], ordinary, atol=1e-5)


def test_recompute_refuses_bad_input(llama, ids):
    with pytest.raises(InvalidArgumentError, match="stride"):
        recompute_nll(llama, ids, T, stride=T + 1)
    with pytest.raises(InvalidArgumentError, match="train_len"):
        recompute_nll(llama, ids, 1)
    with pytest.raises(InvalidArgumentError, match="context"):
        recompute_nll(llama, ids, T, context="nope")
    with lm_infinite(llama, n_global=2, n_local=T), pytest.raises(InvalidArgumentError, match="plain model"):
        recompute_nll(llama, ids, T)
    short = recompute_nll(llama, ids[:, :10], T)  # nothing past T: the ordinary pass only
    assert short.forward_passes == 1 and (short.context_min, short.context_max) == (0, 0)


# ---------------------------------------------------------------- bins and fluent until


def test_bins_run_to_the_end_of_the_window():
    n, t = 1000, 64
    edges = loss_bin_edges(n, t)
    assert edges[0] == 1 and edges[-1] == n and {t // 2, t} <= set(edges.tolist())
    assert np.all(np.diff(edges) > 0) and edges[-2] > 4 * t  # no stop at 4T
    x = np.random.default_rng(0).normal(size=n)
    x[0] = np.nan
    means, counts = binned_loss(x, edges)
    for i in range(edges.size - 1):  # a direct mean per bin
        part = x[edges[i] : edges[i + 1]]
        assert counts[i] == np.isfinite(part).sum() and means[i] == pytest.approx(np.nanmean(part))
    r = LossResult(train_len=t, nll={"baseline": np.tile(x, (2, 1))})
    frame = r.to_frame()
    assert frame.bin_end.max() == n and frame.bin_start.min() == 1


def _curve(level_past: dict[tuple[int, int], float], n=1024, t=64) -> np.ndarray:
    nll = np.full(n, 2.0)
    nll[0] = np.nan
    nll[: t // 2] = 6.0  # the cold start: outside the in-range reference T/2..T
    for (a, b), v in level_past.items():
        nll[a:b] = v
    return nll


def test_sustained_crossing_on_hand_made_curves():
    n, t = 1024, 64
    edges = loss_bin_edges(n, t)
    starts = edges[:-1]
    spike = int(starts[starts > 2 * t][0]), int(edges[1:][starts > 2 * t][0])  # one whole bin
    # one noisy bin that comes back does not count: never crosses, censored at the end, shown as "≥"
    f = window_fluency(_curve({spike: 5.0}), t, edges)
    assert (f.value, f.censored, f.text()) == (n, True, f"≥ {n}")
    # a rise from 256 that lasts: fluent until 256 (256 is a bin edge)
    assert 256 in starts
    f = window_fluency(_curve({(256, n): 3.0}), t, edges)
    assert (f.value, f.censored) == (256, False)
    # the spike first, then the lasting rise: the spike is ignored
    f = window_fluency(_curve({spike: 5.0, (512, n): 3.0}), t, edges)
    assert (f.value, f.censored) == (512, False)
    # within the 10% tolerance: no crossing
    assert window_fluency(_curve({(256, n): 2.15}), t, edges).censored
    # a rise in the last bin only: too short to confirm, censored at its start
    last = int(starts[-1])
    f = window_fluency(_curve({(last, n): 3.0}), t, edges)
    assert (f.value, f.censored, f.text()) == (last, True, f"≥ {last}")
    # a run stopped early (capped) is censored where it stops
    capped = _curve({})
    capped[300:] = np.nan
    assert window_fluency(capped, t, edges).value == 300
    # sustained_crossing by hand: runs of 2 do not count at sustain 3, the run of 3 does
    m = np.array([1, 9, 9, 1, 9, 9, 1, 9, 9, 9, 1.0])
    assert sustained_crossing(np.arange(11) * 10, m, 5.0, end=110).value == 70
    assert sustained_crossing(np.arange(11) * 10, m, 5.0, end=110, sustain=1).value == 10


def test_fluent_until_against_the_reference_on_the_same_tokens():
    n, t = 1024, 64
    harder = _curve({(256, n): 3.0})  # the text itself is harder past 256: the reference says so too
    edges = loss_bin_edges(n, t)
    assert not window_fluency(harder, t, edges).censored  # against in range: a crossing
    f = window_fluency(harder, t, edges, reference=harder)
    assert (f.value, f.censored) == (n, True)  # against the same tokens' reference: fluent to the end
    worse = harder.copy()
    worse[512:] *= 1.5
    assert window_fluency(worse, t, edges, reference=harder).value == 512
    r = LossResult(train_len=t, nll={"baseline": np.stack([worse] * 2), "recompute": np.stack([harder] * 2)})
    assert r.window_frame().fluent_text.tolist()[:2] == ["512", "512"]


def test_censored_median_interval_and_json():
    e = censored_median([100, 200, 300, 400, 500, 600], [False] * 5 + [True], figure="fluent until")
    assert (e.estimate, e.ci_low, e.ci_high, e.n) == (350.0, 100.0, math.inf, 6)
    assert "96.9% coverage" in e.method and "lower bound" not in e.method
    assert e.to_dict()["ci_high"] is None  # JSON: no upper bound
    # 9 windows, none censored: order statistics 2 and 8 (coverage 96.1%)
    e = censored_median(range(10, 100, 10), [False] * 9)
    assert (e.estimate, e.ci_low, e.ci_high) == (50.0, 20.0, 80.0) and "96.1%" in e.method
    # most windows censored: the median is only a lower bound
    e = censored_median([128, 512, 512, 512], [False, True, True, True])
    assert e.estimate == 512 and "lower bound" in e.method and math.isinf(e.ci_high)


def test_fluent_until_key_figures_say_censored():
    t, n = 64, 1024
    rows = np.stack([_curve({}), _curve({(256, n): 3.0}), _curve({(512, n): 3.0}), _curve({})])
    r = LossResult(train_len=t, nll={"baseline": rows})
    e = r.estimates("baseline")
    assert e["fluent"].values == (n, 256.0, 512.0, n) and math.isinf(e["fluent"].ci_high)
    assert e["to_end"].estimate == 0.5 and e["to_end"].n == 4
    frame = r.window_frame()
    assert frame.fluent_text.tolist() == [f"≥ {n}", "256", "512", f"≥ {n}"]
    words = " ".join(r.findings())
    assert "2 of 4 window(s) never leave" in words and "≥ the end of a censored window" in words


# ---------------------------------------------------------------- intervals, verdicts, control


def test_in_range_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    mu, hits, reps, w, t = 3.0, 0, 300, 6, 32
    for _ in range(reps):
        rows = mu + rng.normal(0, 0.2, (w, 1)) + rng.normal(0, 1.0, (w, 2 * t))
        e = LossResult(train_len=t, nll={"baseline": rows}).estimates("baseline")["in_range"]
        assert e.n == w
        hits += e.ci_low <= mu <= e.ci_high
    assert 0.91 <= hits / reps <= 0.985


def _windows(past_shift: float, drift: float, k=5, n=512, t=64, seed=0):
    """Per-window NLL: 2.0 in range; past T the text itself drifts by `drift` (reference too) and the
    run adds `past_shift`."""
    rng = np.random.default_rng(seed)
    base = 2.0 + rng.normal(0, 0.05, (k, n))
    base[:, t:] += drift
    run = base.copy()
    run[:, t:] += past_shift + rng.normal(0, 0.05, (k, n - t))
    return run, base


def test_verdict_is_net_of_the_recomputed_reference():
    run, ref = _windows(past_shift=0.0, drift=0.5)  # the rise is content drift only
    plain = LossResult(train_len=64, nll={"baseline": run})
    assert plain.verdicts()[0].verdict == "present" and plain.verdicts()[0].figure == RISE
    both = LossResult(train_len=64, nll={"baseline": run, "recompute": ref})
    v = both.verdicts()
    assert [(x.label, x.verdict, x.figure) for x in v] == [("baseline", "absent", NET_REF)]
    assert "recomputed reference" in " ".join(both.findings()) and "content drift" in " ".join(
        both.findings()
    )
    run, ref = _windows(past_shift=1.0, drift=0.5)
    net = LossResult(train_len=64, nll={"baseline": run, "recompute": ref}).net("baseline")
    assert net.estimate == pytest.approx(1.0, abs=0.02) and net.ci_low > 0.1


def test_contamination_control_finding():
    orig, _ = _windows(past_shift=1.0, drift=0.0)
    memorised = orig + 0.0
    memorised[:, :64] -= 1.0  # the original reads much better in range than its shuffled copy
    r = LossResult(train_len=64, nll={"baseline": memorised, "baseline (shuffled)": orig}, from_books=True)
    gap = r.estimates("baseline (shuffled)")["gap"]
    assert gap.figure == GAP and gap.estimate == pytest.approx(1.0, abs=0.02)
    words = r.findings()
    assert any("may have memorised" in w and "classics" in w for w in words)
    assert [v.label for v in r.verdicts()] == ["baseline", "baseline (shuffled)"]
    same = LossResult(train_len=64, nll={"baseline": orig, "baseline (shuffled)": orig + 0.01})
    assert any("no sign that a memorised text" in w for w in same.findings())
    alone = LossResult(train_len=64, nll={"baseline": orig}, from_books=True)
    assert alone.findings()[-1] == CLASSICS


def test_shuffle_paragraphs_keeps_the_multiset():
    text = load_text("carroll-alice")[0]
    a, b = shuffle_paragraphs(text, 0), shuffle_paragraphs(text, 1)
    assert sorted(paragraphs(a)) == sorted(paragraphs(text)) == sorted(paragraphs(b))
    assert a != text and a != b and a == shuffle_paragraphs(text, 0)
    assert paragraphs(a) != paragraphs(text)
    with pytest.raises(InvalidArgumentError, match="paragraph"):
        shuffle_paragraphs("one paragraph only\nwith two lines", 0)


def test_shuffled_window_reads_the_same_paragraphs():
    from .tiny import small_tokenizer

    text = "\n\n".join(f"Paragraph {i} says word{i} again and again." for i in range(40))
    tok = small_tokenizer(text)
    ids = shuffled_window(tok, text, 60, seed=2)
    plain = tok(text, add_special_tokens=False)["input_ids"][:60]
    assert ids.shape == (1, 60) and ids[0].tolist() != plain
    # the control covers about the original window's paragraphs (the first ones), not the whole text
    words = set(tok.decode(ids[0]).split())
    assert not any(f"word{i}" in words for i in range(20, 40))


# ---------------------------------------------------------------- plumbing: traces and documents


def test_perplexity_by_position_over_windows_with_reference_and_control():
    cmps = [make_comparison(n=256, train_len=64, seed=s) for s in range(4)]
    ref = [np.asarray(c.traces["lambda"].nll) for c in cmps]  # a flat stand-in reference
    r = perplexity_by_position(cmps, reference=ref, control=cmps)
    assert r.labels == ["baseline", "lambda", "recompute", "baseline (shuffled)", "lambda (shuffled)"]
    assert {e.n for e in r.key_figures()} == {4}
    assert r.bin_frame().bin_end.max() == 256
    v = {x.label: x for x in r.verdicts()}
    assert v["baseline"].verdict == "present" and v["baseline"].figure == NET_REF
    assert v["lambda"].verdict == "absent"
    with pytest.raises(InvalidArgumentError, match="reference has 1"):
        perplexity_by_position(cmps, reference=ref[:1])


def test_documents_with_recompute_and_control(tmp_path):
    from .tiny import small_tokenizer

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("carroll-alice", "shakespeare-hamlet"):
        (docs / f"{name}.txt").write_text(load_text(name)[0][:4000], encoding="utf-8")
    tok = small_tokenizer(" ".join(p.read_text() for p in docs.iterdir()))
    model = tiny_model("llama")  # T = 32
    res = perplexity_over_documents(
        model,
        tok,
        [docs],
        48,
        modes=("baseline", "lambda"),
        n_global=4,
        recompute=True,
        recompute_stride=4,
        control="shuffled",
        run_dir=tmp_path / "run",
    )
    assert res.labels == ["baseline", "lambda", "recompute", "baseline (shuffled)"]
    ids = tok((docs / "carroll-alice.txt").read_text(), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ][:, :48]
    direct = recompute_nll(model, ids, 32, stride=4).nll
    np.testing.assert_allclose(res.nll["recompute"][0], direct, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(res.nll["recompute"][:, 1:32], res.nll["baseline"][:, 1:32], atol=1e-5)
    assert not np.allclose(res.nll["baseline (shuffled)"], res.nll["baseline"], equal_nan=True)
    assert "forward tokens over 2 document(s)" in res.costs["recompute"] and "recompute" in res.description
    assert json.dumps([e.to_dict() for e in res.key_figures()])  # JSON-ready
    again = perplexity_over_documents(  # resumed from the run folder, cost included
        model,
        tok,
        [docs],
        48,
        modes=("baseline", "lambda"),
        n_global=4,
        recompute=True,
        recompute_stride=4,
        control="shuffled",
        run_dir=tmp_path / "run",
    )
    assert again.costs == res.costs
    with pytest.raises(InvalidArgumentError, match="known controls"):
        perplexity_over_documents(model, tok, [docs], 48, control="reversed")


def test_cli_ppl_with_recompute_and_control(tmp_path, capsys):
    from lminf_diag.cli.main import main

    from .tiny import save_tiny_model

    text = load_text("carroll-alice")[0][:6000]
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    model = save_tiny_model(tmp_path / "model", text)
    out = tmp_path / "run"
    args = ["ppl", "--model", model, "--docs", str(tmp_path / "doc.txt"), "--length", "48", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--recompute", "--recompute-stride", "4", "--control", "shuffled"]) == 0
    captured = capsys.readouterr()
    assert "recompute (each token from its last T tokens, re-encoded) cost" in captured.out
    assert captured.err.count("skipped") == 2  # the finished baseline and lambda cells are reused
    summary = json.loads((out / "summary.json").read_text())
    assert [v["label"] for v in summary["verdicts"]] == ["baseline", "lambda", "baseline (shuffled)"]
    assert summary["meta"]["recompute cost"]["recompute"].startswith("160 forward tokens")  # 32 + 4 x 32
    fluent = [k for k in summary["key_figures"] if k["figure"] == "fluent until"]
    assert [k["label"] for k in fluent] == ["baseline", "lambda", "baseline (shuffled)"]
