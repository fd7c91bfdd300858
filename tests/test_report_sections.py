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
    results = analyze_all([make_comparison(n=256, train_len=64, seed=s) for s in range(3)])
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
    findings_html = page[page.index('id="findings"') : page.index('id="verdicts"')]
    for result in seven.values():  # every result's own sentences, in section order
        for line in result.findings():
            assert html.escape(line) in findings_html
    table_html = page[page.index('id="key-figures"') : page.index('id="sec-')]
    for cell in ("<td>decode latency at 4100 tokens</td>", "<td>passkey accuracy beyond T</td>",
                 '<td class="num">1536</td>', '<td class="num">[1536, ≥]</td>'):
        assert cell in table_html  # whole numbers print as integers; a censored interval shows ≥
    assert "e+03" not in table_html and "4100.000" not in table_html
    for unit in ("ms per token", "MB", "fraction"):
        assert f"<td>{unit}</td>" in table_html


def test_findings_say_what_the_evaluations_show(seven):
    lines = findings(seven)
    assert (
        "The baseline retrieves 3/3 needles within the training length (1024 tokens; Wilson 0.44-1.00) "
        "and 0/9 beyond it (Wilson 0.00-0.30)." in lines
    )
    assert any(line.startswith("LM-Infinite retrieves 3/3 needles") and "7/9 beyond it" in line for line in lines)
    assert "The baseline was stopped at 1536 tokens, so its figures past T cover positions 1024..1536 only." in lines
    decoding = [line for line in lines if "decodes at" in line]
    assert decoding[1].startswith("LM-Infinite decodes at 9.5 (95% CI 9.5 to 9.5, n=4) ms per token; its KV cache")
    assert "8 MB" in decoding[1] and "baseline: 20.0 ms, 48 MB; 4100 tokens" in decoding[1]
    assert not any(re.search(r"\d\.\d+e[+-]\d", line) or "4100.0" in line for line in lines)


def test_key_figures_are_estimates_with_intervals(seven):
    table = key_table({k: seven[k] for k in ("passkey", "documents", "decoding")})
    rows = {(e.section if hasattr(e, "section") else s, e.figure, e.label): e
            for e, s in zip(table.rows, table.sections, strict=True)}
    beyond = rows[("passkey", "passkey accuracy beyond T", "lambda")]
    assert (beyond.estimate, beyond.n) == (pytest.approx(7 / 9), 9) and 0.45 < beyond.ci_low < beyond.ci_high < 0.95
    fluent = rows[("documents", "fluent until", "baseline")]
    assert fluent.estimate == 1536 and fluent.ci_high == float("inf")  # censored: the run was capped
    text = format_table(table)
    assert "[1536, ≥]" in text and "e+03" not in text and max(len(line) for line in text.splitlines()) <= 100
    assert fmt(1024) == "1024" and fmt(np.int64(7)) == "7" and fmt(0.5) == "0.500"
    records = json.loads(json.dumps(table.to_records()))
    assert {r["section"] for r in records} == {"passkey", "documents", "decoding"}
    assert all({"figure", "label", "estimate", "ci_low", "ci_high", "n", "unit"} <= set(r) for r in records)


def test_findings_edge_cases():
    within = findings({"p": make_passkey({"baseline": 0, "lambda": 0}, lengths=(256, 512))})
    assert within == [
        "The baseline retrieves 6/6 needles within the training length (1024 tokens; Wilson 0.61-1.00).",
        "LM-Infinite retrieves 6/6 needles within the training length (1024 tokens; Wilson 0.61-1.00).",
    ]
    docs = findings({"d": make_documents(cap=512)})
    assert docs[0] == "The baseline was stopped at 512 tokens (before the training length: no figure past T for it)."
    assert "Past T, the baseline: inconclusive" in docs[1]
    plain = findings({"d": make_decoding(labels=("baseline",))})
    assert plain == ["The baseline decodes at 20.0 (95% CI 20.0 to 20.0, n=4) ms per token; its KV cache holds 48 MB."]


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


TINY = ["--length", "64", "--n-local", "16", "--n-global", "2", "--train-len", "16", "--windows", "1"]


def test_report_with_extra_sections_and_resume(capsys, tiny_folder, tmp_path):
    out = tmp_path / "rep"
    doc = tiny_folder.parent / "doc.txt"
    extras = ["--decode-contexts", "48", "--decode-steps", "4", "--docs", doc]
    extras += ["--passkey-lengths", "64", "--passkey-depths", "0.5", "--passkey-trials", "1"]
    code, stdout, err = run_cli(capsys, "report", "--model", tiny_folder, *extras, *TINY, "--out", out)
    assert code == 0, err
    page = (out / "report.html").read_text()
    for title in EXTRA_TITLES:
        assert f"<h2>{html.escape(title)}</h2>" in page
    assert "Attention entropy against the number of keys attended" in page  # the main analyses are still there
    text = html.unescape(page)
    assert re.search(r"retrieves \d/1 needles beyond the training length \(16 tokens", text)
    assert re.search(r"LM-Infinite decodes at [\d.]+ .*ms per token; its KV cache holds", text)
    assert "passkey accuracy beyond T" in stdout and "decode latency" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {"passkey", "documents", "decoding"} <= set(summary["sections"])
    assert {k["section"] for k in summary["key_figures"]} >= {"passkey", "documents", "decoding", "entropy"}
    assert summary["meta"]["decode contexts"] == [48] and summary["meta"]["documents"] == ["doc"]
    steps = list(json.loads((out / RUN_FILE).read_text())["steps"])
    for step in ("passkey:lambda_64", "ppl:baseline_doc", "decode:baseline_48", "decode:lambda_48"):
        assert step in steps

    code, stdout, err = run_cli(capsys, "report", "--model", tiny_folder, *extras, *TINY, "--out", out)
    assert code == 0, err
    assert "skipped 2 finished capture step(s)" in stdout
    assert err.count("saved in the run folder, skipped") == 6  # 2 passkey, 2 documents, 2 decoding cells
    assert all(title in (out / "report.html").read_text() for title in EXTRA_TITLES)


def test_extra_options_are_off_by_default_and_documented(capsys):
    from lminf_diag.cli.main import build_parser
    from lminf_diag.cli.report import extras_requested

    args = build_parser().parse_args(["report"])
    assert extras_requested(args) == [] and args.passkey_depths is None and args.decode_steps == 16
    assert args.passkey_trials == 50
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
