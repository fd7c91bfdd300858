"""A window within n_local: the findings say the patch cannot act (window and the n_local used)."""

from __future__ import annotations

import warnings

from lminf_diag.analyze import analyze_all
from lminf_diag.capture.windows import Replicate
from lminf_diag.report.findings import findings
from lminf_diag.report.schema import results_payload
from lminf_diag.runs import RunDir
from lminf_diag.synthetic import make_comparison


def _replicate(n: int, train_len: int, n_local: int) -> Replicate:
    """Three synthetic windows whose patched trace records `n_local` in its patch settings."""
    windows = []
    for seed in range(3):
        c = make_comparison(n=n, train_len=train_len, seed=seed, window_noise=0.1)
        c["lambda"].meta.patch = {**c["lambda"].meta.patch, "n_local": n_local, "limit": n_local}
        windows.append(c)
    return Replicate(windows)


def _meta(tmp_path, rep: Replicate) -> dict:
    from lminf_diag.cli.pipeline import run_meta

    run = RunDir(tmp_path / "run", {"model": "synthetic"})
    return run_meta(run, rep, command="report")


def test_window_within_n_local_says_the_patch_cannot_act(tmp_path):
    # T = 64 < window 256 <= n_local 512: past T, but the Λ holds every key
    rep = _replicate(256, 64, 512)
    meta = _meta(tmp_path, rep)
    assert meta["n_local"] == 512 and meta["length"] == 256  # read from the traces' patch settings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = analyze_all(rep)
    lines = findings(results, meta)
    first = lines[0]
    assert "The window (256 tokens) is within n_local (512 tokens" in first
    assert "cannot act" in first and "lambda" in first
    assert "training length" not in first  # the window does go past T = 64
    assert results_payload("report", results, meta)["findings"][0] == first


def test_window_past_n_local_has_no_note(tmp_path):
    rep = _replicate(256, 64, 64)
    meta = _meta(tmp_path, rep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = findings(analyze_all(rep), meta)
    assert not any("within n_local" in line for line in lines)


def test_short_window_note_names_both_limits(tmp_path):
    # window 96 <= T = 128 = n_local (the default): both sentences, the n_local one after the T one
    rep = Replicate([make_comparison(n=96, train_len=128, seed=s) for s in range(2)])
    meta = _meta(tmp_path, rep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = findings(analyze_all(rep), meta)[0]
    assert first.startswith("The window (96 tokens) does not go past the training length (128 tokens)")
    assert "is within n_local (128 tokens" in first
