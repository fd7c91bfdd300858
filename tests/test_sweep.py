"""The n_global x n_local sweep and the reach of retrieval, on the shipped lab model (T = 128)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import lminf_diag as ld
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.sweep import beyond_prompts, passkey_record, run_sweep
from lminf_diag.evaluate.sweep_result import SweepCell, SweepResult

LENGTH, T = 320, 128  # the passkey prompt alone needs about 250 byte tokens
SMALL = dict(length=LENGTH, windows=2, passkey_trials=1, max_new_tokens=1)


@pytest.fixture(scope="module")
def lab():
    return ld.load_model("lab-rope")


class _Bar:
    """A progress factory's bar: counts computed and skipped steps, raises on entering step `stop`."""

    def __init__(self, log: dict, stop: int | None):
        self.log, self.stop = log, stop

    def step(self, name):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            self.log["computed"] += 1
            if self.stop is not None and self.log["computed"] == self.stop:
                raise KeyboardInterrupt("simulated interruption")
            yield

        return cm()

    def skip(self, name, why=""):
        self.log["skipped"] += 1


def _factory(log: dict, stop: int | None = None):
    return lambda total: _Bar(log, stop)


def test_sweep_resumes_only_missing_cells(lab, tmp_path):
    model, tok = lab
    grid = dict(n_globals=[0, 4], n_locals=[32, 64])
    first = {"computed": 0, "skipped": 0}
    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, tok, **grid, **SMALL, run_dir=tmp_path, progress=_factory(first, stop=3))
    saved = sorted(p.name for p in (tmp_path / "sweep").glob("*.json"))
    assert saved == ["g0-l32.json", "g4-l32.json"]  # two cells finished before the interruption
    stamps = {p: (tmp_path / "sweep" / p).stat().st_mtime_ns for p in saved}
    second = {"computed": 0, "skipped": 0}
    res = run_sweep(model, tok, **grid, **SMALL, run_dir=tmp_path, progress=_factory(second))
    assert second == {"computed": 2, "skipped": 2}
    assert all((tmp_path / "sweep" / p).stat().st_mtime_ns == t for p, t in stamps.items())
    assert sorted((c.n_global, c.n_local) for c in res.cells) == [(0, 32), (0, 64), (4, 32), (4, 64)]
    frame = res.to_frame()
    assert len(frame) == 4 and frame["fluency"].notna().all()
    figs = res.figures()
    assert len(figs) == 2 and all(f.data[0].type == "heatmap" for f in figs)
    assert "%{text}" in figs[0].data[0].texttemplate and "[" in figs[0].data[0].text[0][0]


def test_fluency_equals_hand_computation(lab):
    """Loss past T minus the loss over T/2..T, per window, straight from token_nll of the patched model."""
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.capture.windows import plan_windows

    model, tok = lab
    res = run_sweep(model, tok, n_globals=[4], n_locals=[32], length=LENGTH, windows=3, passkey_trials=0)
    rises = []
    for _, ids in plan_windows(tok, ["carroll-alice"], LENGTH, 3, repeat=True):
        with ld.method(model, "lambda", n_global=4, n_local=32):
            nll = token_nll(model, ids).astype(np.float64)
        rises.append(np.mean(nll[T:]) - np.mean(nll[T // 2 : T]))
    e = res.fluency(4, 32)
    assert e.n == 3 and e.estimate == pytest.approx(np.mean(rises), abs=1e-5)
    half = stats.t.ppf(0.975, 2) * np.std(rises, ddof=1) / math.sqrt(3)
    assert (e.ci_low, e.ci_high) == pytest.approx((np.mean(rises) - half, np.mean(rises) + half), abs=1e-5)
    assert any("no passkey prompts" in line.lower() for line in res.findings())


def test_streaming_runs_and_differs_from_lambda(lab):
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.capture.windows import plan_windows

    model, tok = lab
    res = run_sweep(model, tok, method="streaming", n_globals=[4], n_locals=[32], **SMALL)
    (_, ids), = plan_windows(tok, ["carroll-alice"], LENGTH, 1, repeat=True)
    with ld.method(model, "streaming", n_global=4, n_local=32):
        ref = token_nll(model, ids)
    with ld.method(model, "lambda", n_global=4, n_local=32):
        lam = token_nll(model, ids)
    got = res.cell(4, 32).nll[0]
    np.testing.assert_allclose(got[1:], ref[1:], atol=1e-5)
    assert np.nanmax(np.abs(got - lam)) > 1e-3  # the two methods are not the same computation
    rec = res.cell(4, 32).passkey[0]
    assert rec["distance"] > 32 and res.retrieval(4, 32).n == 1


def test_geometric_expectation_matches_brute_force(lab):
    _, tok = lab
    n_local = 32
    draws = beyond_prompts(tok, LENGTH, n_local, trials=12, seed=3)
    for d in draws:  # every needle lies beyond the window: its first token is farther than n_local
        assert len(range(d.prompt.needle_start, d.prompt.n_tokens)) > n_local
    shares = {}
    for g in (0, 4, 200, 260, LENGTH):
        cell = SweepCell(g, n_local, np.full((1, LENGTH), np.nan), [], [passkey_record(d, "", g, n_local) for d in draws])
        res = SweepResult(method="lambda", train_len=T, cells=[cell])
        brute = sum(all(j < g for j in range(d.prompt.needle_start, d.prompt.needle_end)) for d in draws)
        assert res.expected(g, n_local).estimate == pytest.approx(brute / len(draws))
        shares[g] = res.expected(g, n_local).estimate
    assert shares[0] == 0.0 and 0.0 < shares[260] < 1.0 and shares[LENGTH] == 1.0


def test_bad_settings_are_refused(lab):
    model, tok = lab
    with pytest.raises(InvalidArgumentError, match="largest n_local"):
        run_sweep(model, tok, n_globals=[0], n_locals=[LENGTH], length=LENGTH)
    with pytest.raises(InvalidArgumentError, match="lambda, streaming"):
        run_sweep(model, tok, method="yarn", n_globals=[0], n_locals=[32], length=LENGTH)
    with pytest.raises(InvalidArgumentError, match="training length"):
        run_sweep(model, tok, n_globals=[0], n_locals=[32], length=T)


def test_cli_sweep_with_reach_writes_report(tmp_path, capsys):
    from lminf_diag.cli.main import main

    out = tmp_path / "run"
    code = main(["sweep", "--model", "lab-rope", "--n-global", "0", "--n-local", "32", "--length", str(LENGTH),
                 "--windows", "2", "--passkey-trials", "1", "--max-new-tokens", "1", "--reach",
                 "--reach-distances", "100,200", "--reach-trials", "1", "--reach-runs", "lambda,recompute",
                 "--out", str(out)])
    assert code == 0 and (out / "sweep.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert "loss past T minus in range" in text and "passkey accuracy at distance 200" in text
