"""Passkey retrieval: prompt building, scoring, random depths, the needle's place in the Λ, Wilson
intervals, the runner (stand-in and real tiny models), prompt-by-prompt resume, figures, findings, CLI."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch

from lminf_diag.cli.progress import Progress
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate import (
    PasskeyResult,
    PasskeyTrial,
    build_passkey_prompt,
    haystack_sentences,
    passkey_key,
    run_passkey,
    score_answer,
)
from lminf_diag.evaluate.passkey import INSTRUCTION, NEEDLE, QUESTION, trial_depth
from lminf_diag.evaluate.passkey_figures import train_len_boundary
from lminf_diag.patch import current_spec
from lminf_diag.runs import RunDir

from .tiny import save_tiny_model, small_tokenizer, tiny_model

DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _n(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------ prompts


@pytest.mark.parametrize("length", [150, 400, 1000])
@pytest.mark.parametrize("depth", DEPTHS)
def test_prompt_length_needle_depth_and_question(tok, length, depth):
    p = build_passkey_prompt(tok, length, depth, 54321)
    ids = p.input_ids[0].tolist()
    assert p.input_ids.shape == (1, p.n_tokens) and p.input_ids.dtype == torch.long
    assert length - 8 <= p.n_tokens <= length
    text = tok.decode(ids)
    assert text.startswith(INSTRUCTION) and text.endswith("\n" + QUESTION)
    assert text.count("54321") == 2 and p.key == 54321
    assert tok.decode(ids[p.needle_start :]).startswith(NEEDLE.format(key=54321))
    assert tok.decode(ids[p.needle_start : p.needle_end]).strip() == NEEDLE.format(key=54321)
    assert not tok.decode(ids[p.needle_start : p.needle_end - 1]).strip().endswith("pass key.")
    assert not tok.decode(ids[: p.needle_start]).endswith("The")  # the needle's first token is its start
    # the needle sits at a sentence boundary within one sentence of the requested depth
    sentence = max(_n(tok, s) for s in haystack_sentences("filler")) + 1
    haystack = p.n_tokens - _n(tok, INSTRUCTION + NEEDLE.format(key=54321) + QUESTION) - 4
    assert abs(p.actual_depth - depth) <= sentence / haystack + 1e-9
    before = text[len(INSTRUCTION) + 1 : text.index("The pass key is")].strip()
    assert before == "" or before.endswith(".")
    if depth == 0.0:
        assert p.actual_depth == 0.0 and before == ""
    if depth == 1.0:
        assert text.index("54321 is the pass key.") > text.rindex("There and back again")


def test_prompt_deterministic_and_bos(tok):
    a = build_passkey_prompt(tok, 300, 0.5, 11111)
    b = build_passkey_prompt(tok, 300, 0.5, 11111)
    assert torch.equal(a.input_ids, b.input_ids) and (a.needle_start, a.actual_depth) == (
        b.needle_start,
        b.actual_depth,
    )
    bos_tok = small_tokenizer()
    from tokenizers import processors

    bos_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    c = build_passkey_prompt(bos_tok, 300, 0.5, 11111)
    assert c.input_ids[0, 0].item() == 1 and c.n_tokens <= 300
    assert bos_tok.decode(c.input_ids[0, c.needle_start :]).startswith("The pass key is 11111")


def test_book_haystack():
    from lminf_diag.data import load_text

    tok = small_tokenizer(load_text("carroll-alice")[0][:3000])
    text = "Alice was beginning to get very tired of sitting by her sister on the bank. " * 3
    p = build_passkey_prompt(tok, 300, 0.5, 22222, haystack="carroll-alice")
    decoded = tok.decode(p.input_ids[0])
    assert "Lewis Carroll" in decoded and "grass is green" not in decoded
    assert 300 - 8 <= p.n_tokens <= 300 and decoded.endswith(QUESTION)
    q = build_passkey_prompt(tok, 400, 0.25, 22222, haystack=text)  # a literal text, repeated
    assert 400 - 8 <= q.n_tokens <= 400 and "sister" in tok.decode(q.input_ids[0])


def test_prompt_rejects_bad_arguments(tok):
    with pytest.raises(InvalidArgumentError, match="at least"):
        build_passkey_prompt(tok, 20, 0.5, 12345)
    with pytest.raises(InvalidArgumentError, match="depth"):
        build_passkey_prompt(tok, 300, 1.5, 12345)
    with pytest.raises(InvalidArgumentError):
        build_passkey_prompt(tok, 300, 0.5, 12345, haystack="no-such-book")


def test_score_answer():
    assert score_answer("12345.", 12345)
    assert score_answer(" 12345 is the pass key", 12345)
    assert not score_answer("The key is 1234 5", 12345)  # first integer is 1234
    assert score_answer("The key is 1234 5", 1234)
    assert not score_answer("", 12345) and not score_answer("no digits here", 12345)
    assert not score_answer("123456", 12345)


def test_keys_deterministic_five_digits():
    keys = [passkey_key(0, n, d, t) for n in (100, 200) for d in DEPTHS for t in range(3)]
    assert keys == [passkey_key(0, n, d, t) for n in (100, 200) for d in DEPTHS for t in range(3)]
    assert all(10000 <= k <= 99999 for k in keys) and len(set(keys)) > 25
    assert passkey_key(1, 100, 0.5, 0) != passkey_key(0, 100, 0.5, 0)
    assert 100 <= passkey_key(0, 100, 0.5, 0, digits=3) <= 999


def _needle_span(tok, ids: list[int], key: int) -> tuple[int, int]:
    """The needle's token span found by decoding alone (an independent reference)."""
    needle = NEEDLE.format(key=key)
    start = next(i for i in range(len(ids)) if tok.decode(ids[i:]).startswith(needle))
    end = next(j for j in range(start + 1, len(ids) + 1) if needle in tok.decode(ids[start:j]))
    return start, end


# ------------------------------------------------------------------ runner


def _stand_in(model, tok, copy, seen: list, fail_after: int | None = None):
    """A `generate` that answers with the key found in the prompt (copy=True), a wrong number
    (copy=False), or the key only when the whole needle lies in the last `copy` tokens (copy an int)."""

    def generate(input_ids, attention_mask=None, generation_config=None, **kwargs):
        if fail_after is not None and len(seen) >= fail_after:
            raise KeyboardInterrupt
        spec = current_spec(model)
        seen.append(None if spec is None else spec.mode)
        text = tok.decode(input_ids[0])
        key = int(re.search(r"pass key is (\d+)", text).group(1))
        right = copy if isinstance(copy, bool) else NEEDLE.format(key=key) in tok.decode(input_ids[0, -copy:])
        answer = f" {key}. Remember" if right else f" {(key + 1) % 100000}."
        new = tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert generation_config.max_new_tokens == 8 and not generation_config.do_sample
        return torch.cat([input_ids, new], dim=1)

    return generate


@pytest.mark.parametrize("copy", [True, False])
def test_runner_scores_stand_in_models(tok, monkeypatch, copy):
    model, seen = tiny_model("llama"), []
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, copy, seen))
    res = run_passkey(model, tok, [150, 250], [0.0, 0.5, 1.0], trials=6, seed=3)
    assert isinstance(res, PasskeyResult) and res.labels == ["baseline", "lambda"]
    assert seen == [None] * 12 + ["lambda"] * 12  # baseline unpatched, lambda under the patch
    assert current_spec(model) is None
    want = 1.0 if copy else 0.0
    for mode in ("baseline", "lambda"):
        assert np.all(res.accuracy_grid(mode) == want)
        assert res.within_beyond(mode) == ((0, 0), (12 * int(copy), 12))
    frame = res.to_frame()
    assert list(frame.columns)[:7] == ["mode", "length", "depth", "trial", "key", "answer", "correct"]
    assert len(frame) == 24 and frame["correct"].all() == copy
    assert sorted(frame["depth"].unique()) == [0.0, 0.5, 1.0]  # fixed depths in turn: 2 prompts each
    assert (frame.groupby(["mode", "length", "depth"]).size() == 2).all()
    keys = frame.pivot_table(index=["length", "trial"], columns="mode", values="key")
    assert (keys["baseline"] == keys["lambda"]).all()  # the same prompts for every run
    assert res.accuracy_by_length().shape == (2, 2)


def test_runner_records_needle_span_and_flags(tok, monkeypatch):
    """Random depths; the stand-in retrieves only needles in the last 64 tokens (n_local = 64), so
    LM-Infinite's accuracy is exactly its inside-Λ share, as found with an independent needle search."""
    model, seen = tiny_model("llama"), []
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, 64, seen))
    res = run_passkey(model, tok, [120, 200], trials=12, seed=5, n_global=4, n_local=64)
    assert res.random_depths and res.n_local == 64 and res.n_global == 4
    frame = res.to_frame()
    assert len(frame) == 48 and len(set(frame["depth"])) == 24  # one depth per (length, trial)
    assert set(frame["depth"]) == {trial_depth(5, n, t) for n in (120, 200) for t in range(12)}
    for r in res.records:
        p = build_passkey_prompt(tok, r.length, r.depth, r.key)
        start, end = _needle_span(tok, p.input_ids[0].tolist(), r.key)
        assert (r.needle_start, r.needle_end, r.distance) == (start, end, r.n_tokens - start)
        lam = start >= r.n_tokens - 64 or end <= 4
        assert r.inside_lambda == lam and r.inside == (None if r.mode == "baseline" else lam)
    c = res.conditional("lambda")
    assert c["outside"][0] == 0 and c["inside"][0] == c["inside"][1] == c["share_inside"][0]
    assert c["all"][1] == 24 and 0 < c["share_inside"][0] < 24  # random depths fall on both sides


def test_runner_with_real_tiny_model_end_to_end(tok, tmp_path):
    model = tiny_model("llama")
    out = tmp_path / "run"
    res = run_passkey(model, tok, [120, 160], trials=2, modes=("baseline", "lambda", "window"), n_global=4,
                      run_dir=out)  # fmt: skip
    frame = res.to_frame()
    assert len(frame) == 12 and frame["answer"].map(lambda a: isinstance(a, str)).all()
    assert set(frame["correct"]) <= {True, False} and (frame["needle_end"] > frame["needle_start"]).all()
    assert res.train_len == 32 and current_spec(model) is None
    w = frame[frame["mode"] == "window"]
    assert not (w["inside"] & ~w["inside_lambda"]).any()  # window's Λ (no globals) within lambda's
    assert all(0.0 <= e.estimate <= 1.0 and e.n > 0 for e in res.key_figures())
    assert len(res.findings()) >= 3 and len(res.figures()) == 3
    more = run_passkey(
        model, tok, [120, 160], trials=3, modes=("baseline", "lambda", "window"), n_global=4, run_dir=out
    )  # fmt: skip  (one more prompt per cell; the first two are reloaded)
    kept = more.to_frame()
    assert len(kept) == 18 and kept[kept["trial"] < 2].reset_index(drop=True).equals(frame)


def test_runner_rejects_bad_arguments(tok):
    model = tiny_model("llama")
    for kwargs in ({"modes": ("baseline", "nope")}, {"trials": 0}, {"depths": [2.0]}, {"lengths": [0]},
                   {"depths": []}):  # fmt: skip
        args = {"lengths": [150], "depths": [0.5], **kwargs}
        with pytest.raises(InvalidArgumentError):
            run_passkey(model, tok, **args)


@pytest.mark.parametrize("use_rundir", [False, True])
def test_runner_resumes_from_run_dir(tok, monkeypatch, tmp_path, use_rundir):
    model, seen = tiny_model("llama"), []
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, True, seen))
    out = tmp_path / "run"
    folder = (lambda: RunDir(out, {"task": "passkey"})) if use_rundir else (lambda: out)
    first = run_passkey(model, tok, [150, 250], trials=2, run_dir=folder())
    assert len(seen) == 8
    stream = io.StringIO()
    again = run_passkey(
        model, tok, [150, 250], trials=2, run_dir=folder(), progress=lambda n: Progress(n, stream=stream)
    )
    assert len(seen) == 8  # nothing recomputed
    assert again.to_frame().equals(first.to_frame())
    assert (
        stream.getvalue().count("skipped") == 4
        and "[4/4] lambda: 2 prompt(s) of 250 tokens" in stream.getvalue()
    )
    (out / "passkey" / "lambda_250.json").unlink()  # a lost cell is recomputed, alone
    if use_rundir:
        run = RunDir(out, {"task": "passkey"})
        assert "passkey:lambda_250" in run.done_steps
    stream = io.StringIO()
    run_passkey(
        model, tok, [150, 250], trials=2, run_dir=folder(), progress=lambda n: Progress(n, stream=stream)
    )
    assert len(seen) == 10 and stream.getvalue().count("skipped") == 3
    assert stream.getvalue().strip().endswith("done")
    run_passkey(model, tok, [150, 250], trials=2, seed=1, run_dir=folder())  # other prompts: recomputed
    assert len(seen) == 18
    run_passkey(model, tok, [150, 250], trials=2, seed=1, n_global=5, run_dir=folder())
    assert seen[18:] == ["lambda"] * 4  # the baseline does not depend on the patch settings


def test_runner_resumes_prompt_by_prompt(tok, monkeypatch, tmp_path):
    model, seen = tiny_model("llama"), []
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, True, seen, fail_after=5))
    with pytest.raises(KeyboardInterrupt):  # interrupted during the 6th prompt (baseline, 3rd of 200)
        run_passkey(model, tok, [150, 200], trials=3, run_dir=tmp_path)
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, True, seen))
    stream = io.StringIO()
    res = run_passkey(model, tok, [150, 200], trials=3, run_dir=tmp_path,
                      progress=lambda n: Progress(n, stream=stream))  # fmt: skip
    assert len(seen) == 5 + 7  # 12 prompts in all, none answered twice
    assert "baseline: 3 prompt(s) of 200 tokens (2 kept)" in stream.getvalue()
    assert len(res.records) == 12 and all(r.correct for r in res.records)


# ------------------------------------------------------------------ figures


def test_heat_maps_for_fixed_depths():
    records = [
        PasskeyTrial(m, n, d, 0, 12345, "12345", m == "lambda" or n <= 128, n, d)
        for m in ("baseline", "lambda")
        for n in (64, 128, 256)
        for d in (0.0, 0.5, 1.0)
    ]
    res = PasskeyResult(labels=["baseline", "lambda"], train_len=128, records=records, lengths=[64, 128, 256],
                        depths=[0.0, 0.5, 1.0])  # fmt: skip
    figs = res.figures()
    assert len(figs) == 3  # no needle spans: no Λ bars
    heat = figs[-1]
    assert [t.type for t in heat.data] == ["heatmap", "heatmap"]
    assert heat.layout.yaxis.title.text == "needle depth (fraction)"
    assert list(heat.layout.xaxis.ticktext) == ["64", "128", "256"]
    assert heat.data[0].z[2][2] == 0.0 and heat.data[1].z[2][2] == 1.0  # z is (depth, length)
    assert [sh.x0 for sh in heat.layout.shapes] == [1.5, 1.5]
    assert res.within_beyond("baseline") == ((6, 6), (0, 3))


def test_train_len_boundary():
    assert train_len_boundary([64, 128, 256], 100) == 0.5
    assert train_len_boundary([64, 128], 128) == 1.5
    assert train_len_boundary([64, 128], 1000) is None
    assert train_len_boundary([256, 512], 128) == -0.5
    assert train_len_boundary([64], None) is None


# ------------------------------------------------------------------ CLI


def test_cli_passkey_writes_report_and_resumes(tmp_path, capsys):
    import json

    from lminf_diag.cli.main import main

    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "run"
    args = ["passkey", "--model", model, "--lengths", "150,200", "--trials", "2", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert re.search(r"run +150 +200 +within T +beyond T", captured.out)
    assert "prompts longer than n_local" in captured.out and "share inside (expected)" in captured.out
    assert "[4/4] lambda: 2 prompt(s) of 200 tokens" in captured.err and "left" in captured.err
    assert (out / "passkey.html").is_file() and (out / "passkey" / "lambda_200.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    figures = {(k["label"], k["figure"]): k for k in summary["key_figures"]}
    assert figures[("lambda", "passkey accuracy beyond T")]["n"] == 4
    assert ("lambda", "passkey needles inside Λ (geometric expectation)") in figures
    assert summary["verdicts"] == [] and summary["meta"]["trials"] == 2
    assert summary["meta"]["lengths"] == [150, 200] and summary["meta"]["depths"].startswith("random")
    assert main([*args, "--json"]) == 0  # resumed: nothing recomputed, JSON on stdout
    captured = capsys.readouterr()
    assert captured.err.count("saved in the run folder, skipped") == 4
    payload = json.loads(captured.out)
    assert any("needles inside the Λ" in line for line in payload["findings"])


def test_cli_passkey_help_and_bad_input(capsys):
    from lminf_diag.cli.main import main

    assert main(["passkey", "--help"]) == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and "--lengths" in text and "--haystack" in text and "--trials" in text
    assert "per prompt at 2048 tokens" in text and "lab-rope" in text and "--train-len" in text
    assert main(["passkey", "--depths", "0,2"]) == 2
    assert "fractions between 0 and 1" in capsys.readouterr().err
    assert main(["passkey", "--lengths", "a,b"]) == 2
    assert main(["passkey", "--trials", "0"]) == 2
    assert main(["passkey", "--haystack", "no-such-book", "--out", "/nonexistent/x"]) == 2
    assert "Unknown text" in capsys.readouterr().err


def test_runner_takes_one_settings_object(tok, monkeypatch):
    """settings=MethodSettings(n_global=4, n_local=64) gives the Λ of the loose keywords: the stand-in
    retrieves exactly the needles inside the last 64 tokens or the first 4."""
    from lminf_diag.attention.method_spec import MethodSettings

    model, seen = tiny_model("llama"), []
    monkeypatch.setattr(model, "generate", _stand_in(model, tok, 64, seen))
    res = run_passkey(model, tok, [200], trials=4, seed=5, settings=MethodSettings(n_global=4, n_local=64))
    assert res.n_local == 64 and res.n_global == 4
    for r in res.records:
        assert r.inside_lambda == (r.needle_start >= r.n_tokens - 64 or r.needle_end <= 4)
    with pytest.raises(InvalidArgumentError, match="not both"):
        run_passkey(model, tok, [200], trials=1, settings=MethodSettings(), top_k=2)
