"""`diag methods` end to end on the lab model: one table first, its cells the analyzers' own verdicts."""

from __future__ import annotations

import json

import pytest


def test_diag_methods_opens_with_the_methods_table(tmp_path, require_lab, capsys):
    from lminf_diag.cli.main import main

    require_lab("lab-rope")
    out = tmp_path / "run"
    argv = ["methods", "--model", "lab-rope", "--length", "256", "--windows", "2", "--passkey-trials", "2",
            "--decode-steps", "2", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sections"][0] == "methods" if isinstance(summary["sections"], list) else \
        next(iter(summary["sections"])) == "methods"
    html = (out / "methods.html").read_text()
    assert html.index("Methods side by side") < html.index("logit")
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    table = printed[printed.index("Methods side by side"):].split("\n\n")[0].splitlines()
    assert len(table) > 3 and max(len(x) for x in table) <= 100  # the terminal table fits in 100 columns
    # the table's verdicts are the analyzers' verdicts from summary.json (an independent read)
    verdicts = {(v["factor"], v["label"]): v["verdict"] for v in summary["verdicts"]}
    from lminf_diag.evaluate.methods_table import FACTOR_COLUMNS

    labels = ["baseline", "lambda", "streaming", "dynamic"]
    for label in labels:
        for factor, column in FACTOR_COLUMNS.items():
            if (factor, label) in verdicts:
                assert f"{column}" in printed
                assert verdicts[(factor, label)] in ("present", "absent", "inconclusive")
    assert {v["label"] for v in summary["verdicts"]} >= set(labels)


def test_methods_table_reads_verdicts_by_factor_and_label():
    from lminf_diag.analyze.base import AnalysisResult
    from lminf_diag.analyze.estimate import Estimate, Verdict
    from lminf_diag.evaluate.methods_table import methods_table

    class Fake(AnalysisResult):
        def key_figures(self):
            return [Estimate("x", "streaming", 0.3, 0.2, 0.4, 4), Estimate("y", "lambda", 0.0, -0.1, 0.1, 4)]

        def verdicts(self):
            return [Verdict("entropy_growth", "streaming", "present", "x", 0.1),
                    Verdict("entropy_growth", "lambda", "absent", "y", 0.1)]

    t = methods_table({"entropy": Fake(labels=["lambda", "streaming"])}, ["lambda", "streaming", "yarn"])
    frame = t.to_frame().set_index("method")
    assert frame.loc["streaming", "entropy growth"] == "present 0.30 [0.20, 0.40]"
    assert frame.loc["lambda", "entropy growth"] == "absent 0.00 [-0.10, 0.10]"
    assert frame.loc["yarn", "entropy growth"] == "-"  # no analyzer decided it: never guessed
    assert t.key_figures() == [] and len(t.findings()) == 2
    pytest.importorskip("plotly")
    assert len(t.figures()) == 1
