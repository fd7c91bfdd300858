"""Render generated reports in headless Chromium: every figure draws, no JavaScript error, no injected script runs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from lminf_diag.analyze import analyze_all
from lminf_diag.capture.comparison import Comparison
from lminf_diag.report import build_report
from tests.synthetic import make_comparison, make_trace

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent (Debian package 'chromium'; .ci/setup installs it)",
)

# If any of these ran, it would mark the page: <html data-xss="..."> or the document title.
MARK = "document.documentElement.setAttribute('data-xss','{0}')"
PAYLOADS = {
    "model": f"<script>{MARK.format('model')}</script>",
    "text": f'"><img src=x onerror="{MARK.format("text")}">',
    "label": f"</script><script>{MARK.format('label')};document.title='pwned'</script>",
    "meta": f'<svg onload="{MARK.format("meta")}"></svg>',
}


def render(path, profile) -> tuple[str, str]:
    """(dumped DOM, Chromium's stderr with console messages) of a local file."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
        "--dump-dom", f"file://{path}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def html_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r"<html\b[^>]*>", dom).group(0)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def figures_drawn(dom: str) -> dict[str, bool]:
    """fig id -> whether Plotly put an svg.main-svg inside that figure's div."""
    parts = re.split(r'(<div [^>]*id="(fig-\d+)"[^>]*>)', dom)
    out = {}
    for i in range(1, len(parts) - 2, 3):
        out[parts[i + 1]] = 'class="main-svg"' in parts[i + 2].split('<script type="application/json"')[0]
    return out


def console_errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if "CONSOLE" in line]
    return [line for line in lines if re.search(r"uncaught|error|refused", line, re.I)]


def check_page(path, tmp_path) -> tuple[dict[str, str], str]:
    dom, stderr = render(path, tmp_path / "profile")
    attrs = html_attrs(dom)
    drawn = figures_drawn(dom)
    assert attrs["data-js-errors"] == "", attrs["data-js-errors"]
    assert console_errors(stderr) == []
    assert len(drawn) == int(attrs["data-figures"]) > 0
    assert all(drawn.values()), [k for k, v in drawn.items() if not v]
    assert attrs["data-rendered"] == attrs["data-figures"]
    return attrs, dom


def test_every_figure_renders_without_errors(tmp_path):
    results = analyze_all(make_comparison(n=1024, train_len=256))
    path = build_report(results, {"model": "synthetic", "length": 1024}, tmp_path / "report.html")
    attrs, _ = check_page(path, tmp_path)
    assert int(attrs["data-figures"]) == sum(len(r.figures()) for r in results.values())


def test_injected_scripts_do_not_run(tmp_path):
    base = make_trace(n=256, train_len=64)
    evil = make_trace(n=256, train_len=64, kind="flat", label=PAYLOADS["label"])
    for t in (base, evil):
        t.meta.model, t.meta.text_source = PAYLOADS["model"], PAYLOADS["text"]
    results = analyze_all(Comparison({"baseline": base, evil.label: evil}))
    meta = {"model": PAYLOADS["model"], "text": PAYLOADS["text"], "settings": {"note": PAYLOADS["meta"]}}
    path = build_report(results, meta, tmp_path / "report.html")
    attrs, dom = check_page(path, tmp_path)
    assert "data-xss" not in attrs
    assert re.search(r"<title>([^<]*)</title>", dom).group(1) != "pwned"
    assert not re.search(r"<img\b|<svg onload|<script>document", dom)
