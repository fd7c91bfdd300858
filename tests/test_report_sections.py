"""The report's extra sections: passkey retrieval, loss over documents and decoding, in the page,
the findings and the key figures (synthetic results), and ``diag report`` running them (tiny llama)."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from lminf_diag.analyze import analyze_all
from lminf_diag.cli.main import main
from lminf_diag.evaluate.decoding import DecodingResult, DecodingRun
from lminf_diag.evaluate.documents_result import DocumentPerplexityResult
from lminf_diag.evaluate.passkey_run import PasskeyResult, PasskeyTrial
from lminf_diag.report import findings, fmt, format_table, key_table, render_report
from lminf_diag.runs import RUN_FILE
from tests.synthetic import make_comparison

TRAIN = 1024
EXTRA_TITLES = ("Passkey retrieval", "Loss by position over documents", "Decoding speed and KV-cache memory")


def make_passkey(right: dict[str, int], lengths=(1024, 2048, 4096, 8192), train_len=TRAIN) -> PasskeyResult:
    """3 depths per length; every prompt within `train_len` right, `right[mode]` of those beyond it."""
    records = []
    for mode, n_right in right.items():
        beyond = 0
        for length in lengths:
            for depth in (0.0, 0.5, 1.0):
                ok = length <= train_len or beyond < n_right
                beyond += length > train_len
                records.append(
                    PasskeyTrial(mode, length, depth, 0, 12345, "12345" if ok else "-", ok, length, depth)
                )
    return PasskeyResult(
        labels=list(right),
        train_len=train_len,
        records=records,
        lengths=list(lengths),
        depths=[0.0, 0.5, 1.0],
    )


def make_documents(cap: int | None = 1536, length: int = 4096) -> DocumentPerplexityResult:
    nll = {"baseline": np.full((3, length), 2.0, np.float32), "lambda": np.full((3, length), 1.5, np.float32)}
    if cap is not None:
        nll["baseline"][:, cap:] = np.nan
    return DocumentPerplexityResult.build(
        ["baseline", "lambda"], TRAIN, length, ["a", "b", "c"], nll, capped_at={"baseline": cap}
    )


def decoding_run(label: str, prefill: int, mb: float, ms: float) -> DecodingRun:
    steps = 4
    return DecodingRun(
        label,
        prefill,
        0.5,
        np.arange(prefill + 1, prefill + steps + 1),
        np.full(steps, ms / 1000),
        np.full(steps, mb),
    )


def make_decoding(labels=("baseline", "lambda")) -> DecodingResult:
    sizes = {"baseline": (12.0, 48.0, 20.0), "lambda": (8.0, 8.25, 9.5)}
    runs = {
        lab: [
            decoding_run(lab, 1024, sizes[lab][0], 10.0),
            decoding_run(lab, 4096, sizes[lab][1], sizes[lab][2]),
        ]
        for lab in labels
    }
    return DecodingResult(labels=list(labels), train_len=TRAIN, runs=runs)


@pytest.fixture(scope="module")
def seven():
    results = analyze_all(make_comparison(n=256, train_len=64))
    assert len(results) == 4
    results.update(
        passkey=make_passkey({"baseline": 0, "lambda": 7}),
        documents=make_documents(),
        decoding=make_decoding(),
    )
    return results


# ---------------------------------------------------------------- synthetic results


def test_report_renders_all_seven_kinds(seven):
    page = render_report(seven, {"model": "synthetic", "length": 256})
    for result in seven.values():
        assert f"<h2>{html.escape(result.title)}</h2>" in page
        assert html.escape(result.description) in page
    n_figures = sum(len(r.figures()) for r in seven.values())
    assert page.count('class="lminf-figure"') == n_figures
    findings_html = page[page.index('id="findings"') : page.index('id="key-figures"')]
    for word in ("Passkey retrieval", "documents", "ms/token"):
        assert word in findings_html
    table_html = page[page.index('id="key-figures"') : page.index('id="sec-')]
    for cell in ('<td class="num">4100</td>', '<td class="num">1536</td>', '<td class="num">12</td>'):
        assert cell in table_html  # context, capped_at and prompt counts as integers
    assert "e+03" not in table_html and "4100.000" not in table_html
    for unit in ("ms per token", "MB", "fraction correct", "tokens"):
        assert f'<span class="unit">{unit}' in table_html


def test_findings_say_what_the_evaluations_show(seven):
    lines = findings(seven)
    passkey = next(line for line in lines if line.startswith("Passkey"))
    assert passkey.startswith(
        "Passkey retrieval beyond the training length (1024 tokens): baseline 0/9 correct (0%), LM-Infinite 7/9 (78%)"
    )
    docs = next(line for line in lines if line.startswith("Over "))
    assert docs.startswith(
        "Over 3 documents, mean loss at 1-2x the training length (1024 tokens): "
        "baseline 2.00 nats (capped at 1536 tokens) vs 1.50 with LM-Infinite"
    )
    decoding = next(line for line in lines if "ms/token" in line)
    assert decoding == (
        "At 4100 tokens of context, LM-Infinite decodes in 9.5 ms/token with an 8.25 MB cache "
        "vs 20 ms/token and 48 MB for the plain model."
    )
    assert not any(re.search(r"\d\.\d+e[+-]\d", line) or "4100.0" in line for line in lines)
    # the outcomes first (loss, documents, passkey), decoding cost last
    assert lines.index(docs) < lines.index(passkey) < lines.index(decoding) == len(lines) - 1


def test_key_figures_keep_whole_numbers_as_integers(seven):
    table = key_table({k: seven[k] for k in ("passkey", "documents", "decoding")})
    by_key = {c.key: i for i, c in enumerate(table.columns)}
    base = table.values["baseline"]
    assert isinstance(base[by_key["context"]], int) and base[by_key["context"]] == 4100
    assert isinstance(base[by_key["capped_at"]], int) and base[by_key["n_documents"]] == 3
    assert np.isnan(table.values["lambda"][by_key["capped_at"]])  # not capped: n/a
    assert {c.unit for c in table.columns if c.integer} <= {
        "tokens",
        "prompts",
        "documents",
        "tokens (n/a: full length)",
    }
    text = format_table(table)
    assert "4100" in text and "1536" in text and "e+03" not in text
    assert fmt(1024) == "1024" and fmt(np.int64(7)) == "7" and fmt(0.5) == "0.500"
    assert json.loads(json.dumps(table.to_dict()))["baseline"]["decoding.context"] == 4100


def test_findings_edge_cases():
    # every prompt within the training length: said so, with counts
    within = findings({"p": make_passkey({"baseline": 0, "lambda": 0}, lengths=(256, 512))})
    assert within == [
        "Passkey retrieval within the training length (1024 tokens): baseline 6/6 correct (100%), "
        "LM-Infinite 6/6 (100%); no prompt went past the training length."
    ]
    # the baseline stopped before the training length: no 1-2x figure, and the sentence says why
    docs = findings({"d": make_documents(cap=512)})[0]
    assert "LM-Infinite 1.50 nats" in docs and "capped at 512 tokens, before that range" in docs
    # the baseline alone
    plain = findings({"d": make_decoding(labels=("baseline",))})
    assert plain == ["At 4100 tokens of context, the plain model decodes in 20 ms/token with a 48 MB cache."]
    # uncapped documents, window within the training length
    short = DocumentPerplexityResult.build(
        ["baseline", "lambda"],
        4096,
        512,
        ["a"],
        {m: np.full((1, 512), 2.0, np.float32) for m in ("baseline", "lambda")},
    )
    assert findings({"d": short}) == [
        "Over 1 document, mean loss within the training length (4096 tokens): baseline 2.00 nats vs 2.00 with LM-Infinite."
    ]


# ---------------------------------------------------------------- diag report with extra sections


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """tiny_model("llama") saved with a WordLevel tokenizer, plus a small document beside it."""
    from lminf_diag.data import default_text, load_text
    from tests.tiny import save_tiny_llama_folder

    folder = save_tiny_llama_folder(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    (folder.parent / "doc.txt").write_text(load_text(default_text())[0][:3000])
    return folder


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TINY = ["--length", "64", "--n-local", "16", "--n-global", "2", "--train-len", "16"]


def test_report_with_extra_sections_and_resume(capsys, tiny_folder, tmp_path):
    out = tmp_path / "rep"
    doc = tiny_folder.parent / "doc.txt"
    extras = ["--decode-contexts", "48", "--decode-steps", "4", "--docs", doc]
    extras += ["--passkey-lengths", "64", "--passkey-depths", "0.5"]
    code, stdout, err = run_cli(capsys, "report", "--model", tiny_folder, *extras, *TINY, "--out", out)
    assert code == 0, err
    page = (out / "report.html").read_text()
    for title in EXTRA_TITLES:
        assert f"<h2>{html.escape(title)}</h2>" in page
    assert "Attention entropy grows" in page  # the main analyses are still there
    text = html.unescape(page)
    assert re.search(
        r"Passkey retrieval beyond the training length \(16 tokens\): baseline \d/1 correct", text
    )
    assert "Over 1 document, mean loss at 1-2x the training length (16 tokens)" in text
    assert re.search(r"At 52 tokens of context, LM-Infinite decodes in [\d.]+ ms/token", text)
    assert "passkey >T" in stdout and "decode latency" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {"passkey", "documents", "decoding"} <= set(summary["sections"])
    assert summary["meta"]["decode contexts"] == [48] and summary["meta"]["documents"] == ["doc"]
    steps = list(json.loads((out / RUN_FILE).read_text())["steps"])
    for step in ("passkey:lambda_64", "ppl:baseline_doc", "decode:baseline_48", "decode:lambda_48"):
        assert step in steps

    code, stdout, err = run_cli(capsys, "report", "--model", tiny_folder, *extras, *TINY, "--out", out)
    assert code == 0, err
    assert "skipped finished steps trace:baseline, trace:lambda" in stdout
    assert err.count("saved in the run folder, skipped") == 6  # 2 passkey, 2 documents, 2 decoding cells
    assert all(title in (out / "report.html").read_text() for title in EXTRA_TITLES)


def test_extra_options_are_off_by_default_and_documented(capsys):
    from lminf_diag.cli.main import build_parser
    from lminf_diag.cli.report import extras_requested

    args = build_parser().parse_args(["report"])
    assert extras_requested(args) == [] and args.passkey_depths == [0.0, 0.5, 1.0] and args.decode_steps == 16
    code, out, _ = run_cli(capsys, "report", "--help")
    assert code == 0
    for option in (
        "--passkey-lengths",
        "--passkey-depths",
        "--docs",
        "--baseline-max-length",
        "--decode-contexts",
    ):
        assert option in out
    examples = out[out.index("Examples:") :]
    assert "--passkey-lengths" in examples and "--docs" in examples and "--decode-contexts" in examples


def test_extra_sections_refused_with_run_folders(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", tmp_path, "--decode-contexts", "64")
    assert code == 2 and "--decode-contexts" in err and "RUN folders" in err and "Traceback" not in err


def test_unknown_document_fails_before_any_capture(capsys, tmp_path):
    out = tmp_path / "never"
    code, _, err = run_cli(
        capsys, "report", "--model", "no-such-model", "--docs", "no-such-book", "--out", out
    )
    assert code == 2 and "Unknown document 'no-such-book'" in err and "loading model" not in err
    assert not out.exists()
