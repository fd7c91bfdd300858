"""Perplexity over documents: NLL against a direct reference, capped baseline, skips, resume, figures."""

from __future__ import annotations

import io
import re
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from lminf_diag.capture import nll as nll_module
from lminf_diag.cli.progress import Progress
from lminf_diag.data import load_text
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate import DocumentPerplexityResult, perplexity_over_documents, resolve_documents
from lminf_diag.patch import current_spec, lm_infinite
from lminf_diag.runs import RunDir

from .tiny import small_tokenizer, tiny_model

LENGTH = 48


@pytest.fixture(scope="module")
def texts():
    return {name: load_text(name)[0][:4000] for name in ("carroll-alice", "shakespeare-hamlet")}


@pytest.fixture(scope="module")
def tok(texts):
    return small_tokenizer(" ".join(texts.values()))


@pytest.fixture
def folder(tmp_path, texts):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in texts.items():
        (docs / f"{name}.txt").write_text(text, encoding="utf-8")
    (docs / "notes.md").write_text("not a .txt file", encoding="utf-8")
    return docs


def _reference_nll(model, ids, mode=None):
    """Full logits and cross-entropy, computed directly."""
    with torch.no_grad(), lm_infinite(model, n_global=4, mode=mode) if mode else nullcontext():
        logits = model(ids).logits[0].double()
    return torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").numpy()


def test_nll_matches_direct_reference(tok, folder):
    model = tiny_model("llama")
    res = perplexity_over_documents(model, tok, [folder], LENGTH, modes=("baseline", "lambda"), n_global=4)
    assert res.documents == ["carroll-alice", "shakespeare-hamlet"] and res.train_len == 32
    assert res.nll["baseline"].shape == (2, LENGTH) and current_spec(model) is None
    for i, name in enumerate(res.documents):
        ids = tok((folder / f"{name}.txt").read_text(), add_special_tokens=False, return_tensors="pt")[
            "input_ids"
        ]
        ids = ids[:, :LENGTH]
        for mode in ("baseline", "lambda"):
            got = res.nll[mode][i]
            assert np.isnan(got[0])
            want = _reference_nll(model, ids, None if mode == "baseline" else mode)
            np.testing.assert_allclose(got[1:], want, atol=1e-5, rtol=1e-5)
    # past the training length the patch changes the loss; within it, nothing changes
    np.testing.assert_allclose(res.nll["baseline"][:, 1:32], res.nll["lambda"][:, 1:32], atol=1e-5)
    assert not np.allclose(res.nll["baseline"][:, 33:], res.nll["lambda"][:, 33:], atol=1e-4)
    s = res.summary()
    for mode in ("baseline", "lambda"):
        # the in-range reference is positions T/2..T (16..32), never the cold start 0..T
        assert s[mode]["nll_within"] == pytest.approx(np.mean(res.nll[mode][:, 16:32].astype(np.float64)))
        assert s[mode]["nll_beyond"] == pytest.approx(np.mean(res.nll[mode][:, 32:].astype(np.float64)))
        assert s[mode]["nll_1_2x"] == pytest.approx(np.mean(res.nll[mode][:, 32:].astype(np.float64)))
        assert (
            np.isnan(s[mode]["nll_2_4x"]) and np.isnan(s[mode]["capped_at"]) and s[mode]["n_documents"] == 2
        )


def test_capped_baseline_is_recorded(tok, folder):
    model = tiny_model("llama")
    res = perplexity_over_documents(model, tok, [folder], LENGTH, baseline_max_length=40)
    assert np.isnan(res.nll["baseline"][:, 40:]).all() and np.isfinite(res.nll["baseline"][:, 1:40]).all()
    assert np.isfinite(res.nll["lambda"][:, 1:]).all()
    assert np.isnan(res.mean["baseline"][40:]).all()  # the smoothed curve stops at the cap too
    s = res.summary()
    assert s["baseline"]["capped_at"] == 40.0 and np.isnan(s["lambda"]["capped_at"])
    assert res.capped_at == {"baseline": 40, "lambda": None}
    assert "baseline run was stopped at 40 tokens" in res.description
    assert "stopped at 40 tokens" in res.figures()[0].data[2].name
    # a cap at or beyond the length is no cap
    full = perplexity_over_documents(
        model, tok, [folder], LENGTH, modes=("baseline",), baseline_max_length=LENGTH
    )
    assert full.capped_at == {"baseline": None} and np.isfinite(full.nll["baseline"][:, 1:]).all()


def test_short_documents_are_skipped_with_a_note(tok, folder):
    (folder / "tiny.txt").write_text("The pass key is short.", encoding="utf-8")
    res = perplexity_over_documents(tiny_model("llama"), tok, [folder], LENGTH, modes=("lambda",))
    assert res.documents == ["carroll-alice", "shakespeare-hamlet"]
    assert (
        len(res.notes) == 1
        and "tiny.txt" in res.notes[0]
        and "tokens, shorter than the requested 48" in res.notes[0]
    )
    n = len(tok("The pass key is short.", add_special_tokens=False)["input_ids"])
    assert f": {n} tokens" in res.notes[0] and "Skipped:" in res.description


def test_resume_skips_finished_documents(tok, folder, tmp_path, monkeypatch):
    model, calls = tiny_model("llama"), []
    real = nll_module.token_nll

    def counting(model, ids, *a, **k):
        calls.append(int(ids.shape[1]))
        return real(model, ids, *a, **k)

    monkeypatch.setattr(nll_module, "token_nll", counting)
    out = tmp_path / "run"
    run = lambda: RunDir(out, {"task": "ppl"})  # noqa: E731
    first = perplexity_over_documents(model, tok, [folder], LENGTH, baseline_max_length=40, run_dir=run())
    assert sorted(calls) == [40, 40, 48, 48]
    stream = io.StringIO()
    again = perplexity_over_documents(
        model,
        tok,
        [folder],
        LENGTH,
        baseline_max_length=40,
        run_dir=run(),
        progress=lambda n: Progress(n, stream=stream),
    )
    assert len(calls) == 4 and stream.getvalue().count("skipped") == 4
    for mode in first.labels:
        np.testing.assert_array_equal(first.nll[mode], again.nll[mode])
    assert again.to_frame().equals(first.to_frame())
    (out / "ppl" / "lambda_shakespeare-hamlet.json").unlink()  # lost: recomputed alone
    perplexity_over_documents(model, tok, [folder], LENGTH, baseline_max_length=40, run_dir=run())
    assert calls[4:] == [48]
    perplexity_over_documents(model, tok, [folder], LENGTH, baseline_max_length=44, run_dir=run())
    assert calls[5:] == [44, 44]  # another cap: the baseline cells are stale, the lambda cells are not
    assert "ppl:baseline_carroll-alice" in RunDir(out, {"task": "ppl"}).done_steps
    # a plain folder works too
    plain = tmp_path / "plain"
    perplexity_over_documents(model, tok, [folder], LENGTH, modes=("lambda",), run_dir=plain)
    n = len(calls)
    perplexity_over_documents(model, tok, [folder], LENGTH, modes=("lambda",), run_dir=plain)
    assert len(calls) == n and (plain / "ppl" / "lambda_carroll-alice.npy").is_file()


def test_resolve_documents(folder):
    (folder / "sub").mkdir()
    other = folder / "sub" / "carroll-alice.txt"
    other.write_text("x", encoding="utf-8")
    docs = resolve_documents(["carroll-alice", folder, other])
    assert [d[0] for d in docs] == [
        "carroll-alice",
        "carroll-alice-2",
        "shakespeare-hamlet",
        "carroll-alice-3",
    ]
    assert docs[0][1] == "carroll-alice" and docs[1][1].endswith("docs/carroll-alice.txt")
    with pytest.raises(InvalidArgumentError, match="not a bundled book"):
        resolve_documents(["no-such-book"])
    empty = folder / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgumentError, match="no .txt files"):
        resolve_documents([empty])
    with pytest.raises(InvalidArgumentError):
        perplexity_over_documents(tiny_model("llama"), None, [folder], LENGTH, modes=("nope",))


def test_result_figures_and_ranges():
    length, t = 5000, 1000
    rng = np.random.default_rng(0)
    base = np.where(np.arange(length) < t, 2.0, 5.0)[None] + rng.normal(0, 0.1, (3, length))
    nll = {"baseline": base.astype(np.float32), "lambda": np.full((3, length), 2.0, np.float32)}
    nll["baseline"][:, 3000:] = np.nan  # capped
    res = DocumentPerplexityResult.build(
        ["baseline", "lambda"], t, length, ["a", "b", "c"], nll, {"baseline": 3000}
    )
    s = res.summary()
    assert s["baseline"]["nll_within"] == pytest.approx(2.0, abs=0.01)
    assert s["baseline"]["nll_1_2x"] == pytest.approx(5.0, abs=0.01) and s["baseline"][
        "nll_2_4x"
    ] == pytest.approx(5.0, abs=0.01)
    assert s["lambda"]["nll_2_4x"] == 2.0 and s["baseline"]["capped_at"] == 3000.0
    assert list(s["baseline"])[-6:] == [
        "nll_within", "nll_beyond", "nll_1_2x", "nll_2_4x", "capped_at", "n_documents"
    ]
    assert np.all(res.lo["baseline"][10:2900] <= res.mean["baseline"][10:2900] + 1e-9)
    assert np.all(res.hi["baseline"][10:2900] >= res.mean["baseline"][10:2900] - 1e-9)
    fig = res.figures()[0]
    assert len(fig.data) == 6 and all(len(tr.x) <= 2000 for tr in fig.data)
    assert [tr.fill for tr in fig.data[:2]] == [None, "tonexty"]
    assert fig.data[2].line.color == "#1f77b4" and fig.data[5].line.color == "#ff7f0e"
    assert fig.layout.shapes[0].x0 == t and fig.layout.xaxis.title.text == "position (tokens)"
    frame = res.to_frame()
    assert (
        list(frame.columns) == ["label", "position", "mean_nll", "nll_q10", "nll_q90"]
        and len(frame) == 2 * length
    )
    docs = res.document_frame()
    assert len(docs) == 6 and docs.loc[docs.label == "lambda", "in_range"].eq(2.0).all()


def test_changed_document_is_recomputed(tok, folder, tmp_path, monkeypatch):
    model, calls = tiny_model("llama"), []
    real = nll_module.token_nll
    monkeypatch.setattr(
        nll_module, "token_nll", lambda m, ids, *a, **k: calls.append(1) or real(m, ids, *a, **k)
    )
    perplexity_over_documents(model, tok, [folder], LENGTH, modes=("lambda",), run_dir=tmp_path / "run")
    assert len(calls) == 2
    (folder / "carroll-alice.txt").write_text("Different words here. " * 50, encoding="utf-8")
    perplexity_over_documents(model, tok, [folder], LENGTH, modes=("lambda",), run_dir=tmp_path / "run")
    assert len(calls) == 3  # only the changed document


def test_cli_ppl(tmp_path, folder, texts, capsys):
    import json

    from lminf_diag.cli.main import main

    from .tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "model", " ".join(texts.values()))
    (folder / "short.txt").write_text("The end.", encoding="utf-8")
    out = tmp_path / "run"
    args = ["ppl", "--model", model, "--docs", str(folder), "--length", "48", "--baseline-max-length", "40"]
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert re.search(r"short\.txt: \d+ tokens, shorter than the requested 48; skipped", captured.out)
    assert "documents (2): carroll-alice, shakespeare-hamlet" in captured.out
    assert "baseline stopped at 40 tokens" in captured.out and "baseline T/2..T" in captured.out
    assert "[4/4] lambda: shakespeare-hamlet, forward over 48 tokens" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["capped_at"] == {"baseline": 40, "lambda": None}
    in_range = [k for k in summary["key_figures"] if k["figure"] == "NLL in range (T/2..T)"]
    assert [k["label"] for k in in_range] == ["baseline", "lambda"] and in_range[0]["n"] == 2
    assert [(v["factor"], v["label"]) for v in summary["verdicts"]] == [
        ("loss_breakdown", "baseline"), ("loss_breakdown", "lambda")
    ]
    html = (out / "ppl.html").read_text()
    assert "stopped at 40 tokens" in html
    assert main([*args, "--out", str(out), "--mode", "lambda", "--mode", "window"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped") == 4 and "[6/6] window" in err
    assert main(["ppl", "--help"]) == 0 and "Examples:" in capsys.readouterr().out
    assert (
        main(
            [
                "ppl",
                "--model",
                model,
                "--docs",
                str(folder / "short.txt"),
                "--length",
                "48",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "No document has 48 tokens" in capsys.readouterr().err


def test_settings_object_is_the_loose_keywords(tok, folder):
    """settings=MethodSettings(...) runs what n_global=... ran (checked against the direct reference);
    both at once are refused."""
    from lminf_diag.attention.method_spec import MethodSettings

    model = tiny_model("llama")
    res = perplexity_over_documents(model, tok, [folder], LENGTH, modes=("lambda",),
                                    settings=MethodSettings(n_global=4))
    ids = tok((folder / "carroll-alice.txt").read_text(), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ][:, :LENGTH]
    np.testing.assert_allclose(res.nll["lambda"][0, 1:], _reference_nll(model, ids, "lambda"), atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="not both"):
        perplexity_over_documents(model, tok, [folder], LENGTH, settings=MethodSettings(), n_global=4)
