"""Passkey: random depths, the default count, Wilson intervals, the needle's place in the Λ (hand-built
spans and built prompts), conditional accuracy, findings from the intervals, and the figures."""

from __future__ import annotations

import numpy as np
import pytest

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate import PasskeyResult, PasskeyTrial, build_passkey_prompt, run_passkey
from lminf_diag.evaluate.passkey import trial_depth
from lminf_diag.evaluate.passkey_figures import distance_edges
from lminf_diag.evaluate.passkey_geometry import needle_distance, needle_inside, run_lambda
from lminf_diag.evaluate.passkey_result import conditional_counts

from .test_passkey import _needle_span

# ------------------------------------------------------------------ random depths, counts


def test_random_depths_reproducible_and_uniform():
    from scipy import stats

    depths = [trial_depth(7, 4096, t) for t in range(600)]
    assert depths == [trial_depth(7, 4096, t) for t in range(600)]  # a seed reproduces every prompt
    assert depths != [trial_depth(8, 4096, t) for t in range(600)]
    assert depths != [trial_depth(7, 2048, t) for t in range(600)]
    d = np.asarray(depths)
    assert d.min() >= 0.0 and d.max() <= 1.0 and d.min() < 0.02 and d.max() > 0.98
    assert stats.kstest(d, "uniform").pvalue > 1e-3
    deciles = np.histogram(d, bins=10, range=(0, 1))[0]
    assert deciles.min() >= 35 and deciles.max() <= 85  # 60 expected per decile
    assert [trial_depth(0, 1, t, depths=[0.25, 0.75]) for t in range(5)] == [0.25, 0.75, 0.25, 0.75, 0.25]


def test_default_is_at_least_50_prompts_per_length_at_random_depths():
    import inspect

    from lminf_diag.cli.main import build_parser

    params = inspect.signature(run_passkey).parameters
    assert params["trials"].default >= 50 and params["depths"].default is None
    args = build_parser().parse_args(["passkey"])
    assert args.trials >= 50 and args.depths is None
    assert build_parser().parse_args(["passkey", "--prompts", "7"]).trials == 7


# ------------------------------------------------------------------ Wilson intervals and Λ geometry


def test_wilson_interval_against_hand_computed_values():
    from lminf_diag.analyze.estimate import proportion, wilson

    # 3/10: p = 0.3, z = 1.959964; centre (0.3 + z²/20) / (1 + z²/10) = 0.355507,
    # half-width z sqrt(0.021 + z²/400) / (1 + z²/10) = 0.247715 -> [0.107791, 0.603222]
    # (R: prop.test(3, 10, correct = FALSE)$conf.int = 0.1077913 0.6032219)
    p, lo, hi = wilson(3, 10)
    assert p == 0.3 and lo == pytest.approx(0.1077913, abs=1e-6) and hi == pytest.approx(0.6032219, abs=1e-6)
    z2 = 1.959964**2
    assert wilson(0, 8)[2] == pytest.approx(z2 / (8 + z2), abs=1e-6)  # k = 0: upper bound z²/(n+z²)
    assert wilson(12, 12)[1] == pytest.approx(12 / (12 + z2), abs=1e-6)  # k = n: lower bound n/(n+z²)
    e = proportion(0, 8, figure="f", label="lambda")
    assert (e.estimate, e.ci_low, e.n, e.method) == (0.0, 0.0, 8, "wilson") and round(e.ci_high, 2) == 0.32


def test_inside_flag_on_hand_built_spans():
    n, n_local, n_global = 100, 10, 4  # the window of the last row (99) is tokens 90..99
    assert needle_inside(90, 97, n, n_local, n_global)  # entirely in the window
    assert needle_inside(93, 100, n, n_local, n_global)  # ends at the prompt's end
    assert not needle_inside(89, 96, n, n_local, n_global)  # straddles the window edge: outside
    assert not needle_inside(50, 57, n, n_local, n_global)  # in the middle
    assert needle_inside(0, 4, n, n_local, n_global)  # within the first n_global tokens
    assert needle_inside(1, 3, n, n_local, n_global)
    assert not needle_inside(2, 6, n, n_local, n_global)  # straddles the global edge: outside
    assert not needle_inside(0, 4, n, n_local, 0)  # no global tokens ("window" mode)
    assert needle_inside(0, 7, 8, 8, 0)  # a prompt within the window: everything inside
    assert needle_distance(90, n) == n_local and needle_distance(89, n) == n_local + 1
    assert run_lambda("baseline", 4, 10) is None and run_lambda("window", 4, 10) == (0, 10)
    assert run_lambda("lambda", 4, 10) == run_lambda("cap_only", 4, 10) == (4, 10)
    for bad in ((5, 5, 10, 4, 0), (0, 11, 10, 4, 0), (0, 2, 10, 0, 0)):
        with pytest.raises(InvalidArgumentError):
            needle_inside(*bad)


@pytest.mark.parametrize("depth", [0.0, 0.5, 0.97, 1.0])
def test_inside_flag_of_a_built_prompt(tok, depth):
    p = build_passkey_prompt(tok, 200, depth, 24680)
    ids = p.input_ids[0].tolist()
    start, end = _needle_span(tok, ids, 24680)
    assert (p.needle_start, p.needle_end) == (start, end)
    n = len(ids)
    for n_local, n_global in ((n - start, 0), (n - start - 1, 0), (30, 4), (30, end), (30, end - 1)):
        want = start >= n - n_local or end <= n_global  # the definition, written out
        assert needle_inside(p.needle_start, p.needle_end, n, n_local, n_global) == want
    assert needle_inside(start, end, n, n - start, 0) and not needle_inside(start, end, n, n - start - 1, 0)


# ------------------------------------------------------------------ conditional accuracy


def _trial(mode, length, n_tokens, start, correct, inside, t=0):
    return PasskeyTrial(
        mode, length, 0.5, t, 12345, "", correct, n_tokens, 0.5, start, start + 9, inside, inside
    )


def hand_made(n_local: int = 1024) -> PasskeyResult:
    """lambda: 3 prompts within T (right); beyond: 12 needles inside the Λ (right), 8 outside (wrong).
    baseline: the same prompts, 3 within right, 1 beyond right (an outside one)."""
    rec = [_trial("lambda", 1024, 1020, 500, True, True, t) for t in range(3)]
    rec += [_trial("lambda", 2048, 2040, 1500, True, True, t) for t in range(12)]
    rec += [_trial("lambda", 2048, 2040, 100, False, False, t) for t in range(12, 20)]
    for r in list(rec):
        base = r.trial == 12 and r.length == 2048 or r.length == 1024
        rec.append(PasskeyTrial("baseline", r.length, 0.5, r.trial, r.key, "", base, r.n_tokens, 0.5,
                                r.needle_start, r.needle_end, None, r.inside_lambda))  # fmt: skip
    return PasskeyResult(labels=["baseline", "lambda"], train_len=1024, records=rec, lengths=[1024, 2048],
                         n_global=4, n_local=n_local)  # fmt: skip


def test_conditional_counts_arithmetic():
    c = conditional_counts([True, False, True, True, False, False], [True, True, False, False, False, True])
    assert c == {"all": (3, 6), "inside": (1, 3), "outside": (2, 3), "share_inside": (3, 6)}
    assert conditional_counts([], [])["inside"] == (0, 0)


def test_key_figures_and_findings_of_a_hand_made_set():
    from lminf_diag.analyze.estimate import wilson

    res = hand_made()
    assert res.verdicts() == []
    fig = {(e.label, e.figure): e for e in res.key_figures()}
    assert set(fig) == {
        ("baseline", "passkey accuracy within T"), ("baseline", "passkey accuracy beyond T"),
        ("lambda", "passkey accuracy within T"), ("lambda", "passkey accuracy beyond T"),
        ("lambda", "passkey accuracy, needle inside Λ"), ("lambda", "passkey accuracy, needle outside Λ"),
        ("lambda", "passkey needles inside Λ (geometric expectation)"),
    }  # fmt: skip
    counts = {
        ("baseline", "passkey accuracy within T"): (3, 3), ("baseline", "passkey accuracy beyond T"): (1, 20),
        ("lambda", "passkey accuracy beyond T"): (12, 20), ("lambda", "passkey accuracy, needle inside Λ"): (12, 12),
        ("lambda", "passkey accuracy, needle outside Λ"): (0, 8),
        ("lambda", "passkey needles inside Λ (geometric expectation)"): (12, 20),
    }  # fmt: skip
    for k, (right, n) in counts.items():
        p, lo, hi = wilson(right, n)
        assert (fig[k].estimate, fig[k].ci_low, fig[k].ci_high, fig[k].n) == (right / n, lo, hi, n)
    assert res.summary()["lambda"]["passkey accuracy, needle outside Λ"] == 0.0
    # the baseline is read against the lambda settings' Λ: its one right answer beyond T was outside it
    assert res.conditional("baseline") == {"all": (1, 20), "inside": (0, 12), "outside": (1, 8),
                                           "share_inside": (12, 20)}  # fmt: skip
    lines = res.findings()
    assert lines[0] == (
        "The baseline retrieves 3/3 needles within the training length (1024 tokens; Wilson 0.44-1.00) "
        "and 1/20 beyond it (Wilson 0.01-0.24)."
    )
    assert lines[2] == (
        "LM-Infinite retrieves 12/12 needles inside the Λ (Wilson 0.76-1.00) and 0/8 outside (Wilson 0.00-0.32): "
        "its accuracy is the share of needles inside the window (12/20, Wilson 0.39-0.78), not retrieval "
        "from beyond it."
    )
    assert len(lines) == 3  # no Λ sentence for the baseline


def test_findings_follow_the_intervals():
    def result(inside: tuple[int, int], outside: tuple[int, int]) -> PasskeyResult:
        rec = [_trial("lambda", 4096, 4090, 3000, t < inside[0], True, t) for t in range(inside[1])]
        rec += [_trial("lambda", 4096, 4090, 50, t < outside[0], False, 100 + t) for t in range(outside[1])]
        return PasskeyResult(labels=["lambda"], train_len=1024, records=rec, lengths=[4096], n_global=4,
                             n_local=1024)  # fmt: skip

    assert (
        "some needles from beyond the window, fewer than from inside"
        in result((30, 30), (5, 30)).findings()[1]
    )
    assert "show no dependence of retrieval on the Λ" in result((20, 30), (18, 30)).findings()[1]
    assert "inconclusive" in result((1, 3), (0, 3)).findings()[1]
    lines = result((9, 30), (0, 30)).findings()  # separated, nothing beyond, below the share inside
    assert "retrieves no needle from beyond the window" in lines[1] and "lies below the share" in lines[1]
    only = result((4, 4), (0, 0)).findings()[1]
    assert "lay inside the Λ, so these prompts cannot tell" in only


# ------------------------------------------------------------------ figures


def test_figures():
    res = hand_made()
    distance, bars, lines = res.figures()  # random depths: no heat map
    assert distance.layout.xaxis.title.text.startswith("needle distance")
    assert [t.name for t in distance.data] == ["baseline", "lambda"]
    assert distance.layout.shapes[0].x0 == 1024  # the window edge n_local
    lam = distance.data[1]
    assert list(lam.x) == [640.0, 1920.0] and list(lam.y) == [1.0, 0.0]  # edges at multiples of 256
    assert lam.error_y.array[1] == pytest.approx(0.3244, abs=1e-4) and lam.error_y.arrayminus[1] == 0.0
    assert [t.name for t in bars.data] == [
        "accuracy, needle inside Λ", "accuracy, needle outside Λ", "needles inside Λ (geometric expectation)"
    ]  # fmt: skip
    assert [t.y[0] for t in bars.data] == [1.0, 0.0, 0.6] and list(bars.data[0].x) == ["lambda"]
    assert list(lines.data[1].y) == [1.0, 0.6] and lines.layout.shapes[0].x0 == 1024
    assert distance_edges(5000, 1024).tolist()[:5] == [0, 256, 512, 768, 1024]
    assert 1024 in distance_edges(60000, 1024).tolist() and len(distance_edges(60000, 1024)) <= 25
