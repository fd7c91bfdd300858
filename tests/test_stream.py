"""Streaming: chunked losses against one-pass and dense references, bounded cache, exact resume,
non-finite outputs located, bad input refused, and the CLI verb writing its report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from lminf_diag import lm_infinite
from lminf_diag.errors import InvalidArgumentError, NumericalError, RunDirectoryError, TextTooShortError
from lminf_diag.evaluate.stream import stream_loss
from lminf_diag.evaluate.stream_result import StreamResult
from lminf_diag.evaluate.stream_state import CACHE, load_snapshot

from .reference import configure
from .tiny import rope_info, tiny_model

G, W = 4, 32


def _ids(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed))


def _nll_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    out = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:], reduction="none")
    return np.r_[np.nan, out.numpy()]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@torch.no_grad()
def test_stream_equals_one_patched_pass_over_a_long_text(model):
    ids = _ids(6000)
    res = stream_loss(model, ids, chunk=257, n_global=G, n_local=W)
    with lm_infinite(model, n_global=G, n_local=W):
        ref = _nll_from_logits(model(ids[None], use_cache=False).logits[0], ids)
    assert res.nll.shape == (6000,) and np.isnan(res.nll[0])
    assert np.abs(res.nll[1:] - ref[1:]).max() < 1e-4
    assert res.peak_cache_entries == G + W == res.cache_bound


@torch.no_grad()
def test_stream_equals_dense_lambda_reference(model):
    ids = _ids(400, seed=2)
    res = stream_loss(model, ids, chunk=64, n_global=G, n_local=W, limit=W)
    configure(mode="lambda", n_local=W, n_global=G, limit=W, rope=rope_info(model))
    prev = model.config._attn_implementation
    model.set_attn_implementation("lminf_test_reference")
    try:
        ref = _nll_from_logits(model(ids[None], use_cache=False).logits[0], ids)
    finally:
        model.set_attn_implementation(prev)
        configure()
    assert np.abs(res.nll[1:] - ref[1:]).max() < 1e-4


@torch.no_grad()
def test_cache_stays_bounded_with_true_positions(model, tmp_path):
    n = 3000
    res = stream_loss(model, _ids(n), chunk=100, n_global=G, n_local=W, folder=tmp_path)
    assert res.peak_cache_entries <= G + W
    cache, hidden, done = load_snapshot(tmp_path / CACHE)
    assert done == n and hidden.shape == (1, model.config.hidden_size)
    for layer in cache.layers:
        assert layer.keys.shape[2] == G + W
        assert layer.positions.tolist() == list(range(G)) + list(range(n - W, n))


@pytest.mark.parametrize("method", ["lambda", "streaming"])
@torch.no_grad()
def test_interrupted_stream_resumes_to_the_same_losses(model, tmp_path, method):
    ids = _ids(2500, seed=3)
    kw = dict(method=method, chunk=128, n_global=G, n_local=W, stats_every=500, stats_rows=8)
    whole = stream_loss(model, ids, **kw)
    assert whole.peak_cache_entries <= G + W

    def stop(p):
        if p.done >= 1200:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream_loss(model, ids, **kw, folder=tmp_path, checkpoint_every=256, on_chunk=stop)
    resumed = stream_loss(model, ids, **kw, folder=tmp_path, checkpoint_every=256)
    assert 0 < resumed.streamed < 2500 - 1000  # only the rest was streamed
    np.testing.assert_allclose(np.asarray(resumed.nll), whole.nll, rtol=0, atol=1e-5)
    assert resumed.stats["start"].tolist() == whole.stats["start"].tolist()
    np.testing.assert_allclose(resumed.stats["entropy"], whole.stats["entropy"], atol=1e-5)
    with pytest.raises(RunDirectoryError, match="other settings"):
        stream_loss(model, ids, **{**kw, "chunk": 64}, folder=tmp_path)


@torch.no_grad()
def test_stats_samples_are_entropies_of_the_chunk_rows(model):
    res = stream_loss(model, _ids(1000), chunk=100, n_global=G, n_local=W, stats_every=300, stats_rows=10)
    s = res.stats
    assert s["start"].tolist() == [0, 200, 500, 800]  # the first chunk and each crossing of a multiple of 300
    L = model.config.num_hidden_layers
    assert s["entropy"].shape == (4, L)
    # a row attends at most G + W keys: its entropy is at most ln(G + W)
    assert np.all(s["entropy"] > 0) and np.all(s["entropy"] <= np.log(G + W) + 1e-5)
    assert set(res.stats_frame().columns) >= {"start", "layer", "entropy", "max_logit"}


@torch.no_grad()
def test_non_finite_attention_output_is_located_by_layer_and_position():
    model = tiny_model("llama")
    bad_token = 7
    with torch.no_grad():
        model.get_input_embeddings().weight[bad_token] = float("inf")
    ids = _ids(300, seed=4)
    ids[ids == bad_token] = 8
    ids[150] = bad_token
    # layer 0 first: position 150's query is NaN, and so is every row whose window holds key 150
    # (150..150+W-1); the kernel's fused band blocks may spread the NaN a few rows further (0 x NaN)
    with pytest.raises(NumericalError) as err:
        stream_loss(model, ids, chunk=300, n_global=G, n_local=W)
    m = re.match(r"non-finite attention output in layer 0 at positions 150\.\.(\d+) \(float32\)", str(err.value))
    assert m is not None, str(err.value)
    assert 150 + W - 1 <= int(m.group(1)) < 300


def test_bad_input_is_refused(model):
    with pytest.raises(TextTooShortError):
        stream_loss(model, torch.zeros(0, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="chunk"):
        stream_loss(model, _ids(50), chunk=0)
    with pytest.raises(InvalidArgumentError, match="shape"):
        stream_loss(model, torch.zeros(2, 50, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="integers"):
        stream_loss(model, torch.zeros(50))
    with pytest.raises(InvalidArgumentError, match="cannot be streamed"):
        stream_loss(model, _ids(50), method="cap_only")
    with pytest.raises(InvalidArgumentError, match="stats_every"):
        stream_loss(model, _ids(50), stats_every=-1)


def test_result_verdict_follows_the_interval():
    rng = np.random.default_rng(0)
    T, n = 256, 8192
    flat = np.r_[np.nan, rng.normal(2.0, 0.2, n - 1)].astype(np.float32)
    step = flat.copy()
    step[T:] += 1.0  # breakdown right after T
    assert StreamResult(nll=flat, train_len=T).verdicts()[0].verdict == "absent"
    res = StreamResult(nll=step, train_len=T)
    assert res.verdicts()[0].verdict == "present"
    e = res.estimates()
    assert abs(e["rise"].estimate - 1.0) < 0.05 and e["rise"].ci_low > 0.9
    assert abs(e["in_range"].estimate - 2.0) < 0.05
    assert e["fluent"].estimate == T  # first sustained crossing starts at T
    assert "breaks down" in res.findings()[0]


def test_result_renders_in_the_report(tmp_path):
    from lminf_diag.report import build_report

    nll = np.r_[np.nan, np.random.default_rng(1).normal(2.0, 0.2, 4095)].astype(np.float32)
    stats = {"start": np.array([0, 1024]), "end": np.array([512, 1536]),
             "entropy": np.ones((2, 3), np.float32), "max_logit": np.ones((2, 3), np.float32)}
    res = StreamResult(nll=nll, train_len=256, stats=stats)
    page = build_report({"stream": res}, {"model": "m"}, tmp_path / "stream.html").read_text()
    assert "Loss over a long stream" in page and "NLL past T minus in range" in page
    assert len(res.figures()) == 2


@pytest.mark.slow
def test_cli_stream_writes_report_and_resumes(tmp_path):
    from lminf_diag.cli.main import main
    from tests.tiny import save_tiny_llama_folder

    folder = str(save_tiny_llama_folder(tmp_path / "tiny"))
    out = tmp_path / "run"
    argv = ["stream", "--model", folder, "--text", "carroll-alice", "--tokens", "1500", "--chunk", "200",
            "--n-local", "32", "--n-global", "4", "--stats-every", "500", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verb"] == "stream" and (out / "stream.html").is_file()
    assert any(k["figure"] == "NLL past T minus in range" for k in summary["key_figures"])
    assert (out / "stream" / "nll.f32").stat().st_size == 1500 * 4
    assert main(argv) == 0  # finished: resumes with nothing left to stream
    assert main([*argv[:-2], "--chunk", "100", "--out", str(out)]) == 2  # other settings refused
