"""The first five minutes: cheap commands stay free of heavy imports, one list syntax, README flags
that exist, run folders named by their settings, quiet closed pipes, the short-window warning."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lminf_diag.cli import options
from lminf_diag.cli.main import VERBS, build_parser, main, verb_modules

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sklearn", "scipy", "plotly", "pandas")


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["models"], ["models", "--json"], ["books"]])
def test_cheap_commands_import_nothing_heavy(argv):
    code = (
        "import sys\nfrom lminf_diag.cli.main import main\n"
        f"code = main({argv!r})\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    done = _python(code)
    assert "HEAVY [] 0" in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def full_parser():
    return build_parser()  # every verb module imported: slow, once


def _subparsers(parser):
    return parser._subparsers._group_actions[0]


def test_verb_table_matches_the_verb_modules(full_parser):
    helps = {a.dest: a.help for a in _subparsers(full_parser)._choices_actions}
    assert helps == VERBS
    assert set(verb_modules()) == set(VERBS)


def test_readme_commands_parse_and_flags_exist(full_parser):
    readme = (ROOT / "README.md").read_text()
    lines = re.findall(r"^(diag [^\n#|]*)", readme, re.M) + re.findall(r"`(diag [^`]*)`", readme)
    assert len(lines) > 8
    for line in lines:
        full_parser.parse_args(shlex.split(line)[1:])  # SystemExit on any unknown flag
    sub = _subparsers(full_parser).choices
    claim = re.search(r"The analysis verbs \(([^)]*)\) take (.*?)\.\n", readme, re.S)
    assert claim, "README must state which verbs take which options"
    verbs = [v.strip() for v in claim.group(1).split(",")]
    flags = re.findall(r"`(--[a-z-]+)", claim.group(2))
    assert verbs and len(flags) > 8
    for verb in verbs:
        missing = [f for f in flags if f not in sub[verb]._option_string_actions]
        assert not missing, (verb, missing)


def test_every_list_option_takes_commas(full_parser):
    p = full_parser
    a = p.parse_args(["lab", "--models", "lab-rope,lab-nope", "--multiples", "2,4", "--copy-distances", "0.5,2"])
    assert (a.models, a.multiples, a.copy_distances) == (["lab-rope", "lab-nope"], [2, 4], [0.5, 2.0])
    assert p.parse_args(["lab", "--multiples", "8", "--multiples", "16"]).multiples == [8, 16]
    assert p.parse_args(["entropy", "--mode", "lambda,cap_only"]).mode == ["lambda", "cap_only"]
    assert p.parse_args(["report", "--mode", "lambda", "--mode", "window"]).mode == ["lambda", "window"]
    assert p.parse_args(["ppl", "--docs", "carroll-alice,bryant-stories"]).docs == ["carroll-alice", "bryant-stories"]
    a = p.parse_args(["report", "--docs", "carroll-alice,bryant-stories", "runs/x"])
    assert (a.docs, a.runs) == (["carroll-alice", "bryant-stories"], ["runs/x"])
    a = p.parse_args(["passkey", "--lengths", "256,512", "--depths", "0,0.5"])
    assert (a.lengths, a.depths) == ([256, 512], [0.0, 0.5])
    assert p.parse_args(["entropy", "--layers", "0,3"]).layers == [0, 3]
    with pytest.raises(SystemExit):
        p.parse_args(["entropy", "--mode", "lambda,nope"])


def test_book_names_in_text_help_and_books_verb(capsys):
    from lminf_diag.data import list_books

    parser = build_parser({"entropy": verb_modules()["entropy"]})
    text_help = next(a.help for a in _subparsers(parser).choices["entropy"]._actions if a.dest == "text")
    assert all(book in text_help for book in list_books())
    assert main(["books", "--json"]) == 0
    books = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in books] == list_books()
    alice = next(b for b in books if b["name"] == "carroll-alice")
    text = (ROOT / "lminf_diag/data/books/carroll-alice.txt").read_text(encoding="utf-8")
    assert alice["characters"] == len(text) and alice["tokens_smollm2"] == 39039
    assert "Gutenberg" in alice["provenance"]


def _record(full_parser, *argv):
    from lminf_diag.cli.pipeline import record_args

    args = full_parser.parse_args(["entropy", *argv])
    record = record_args(args, options.resolve_stride(args.stride, args.length))
    return options.default_out("entropy", args.model, args.length, record, record["windows"])


def test_default_run_folder_is_named_by_its_settings(full_parser):
    same = _record(full_parser, "--model", "lab-rope", "--length", "512")
    assert same == _record(full_parser, "--model", "lab-rope", "--length", "512", "--mode", "window")
    assert re.fullmatch(r"entropy-lab-rope-512-w16-[0-9a-f]{6}", same.name)
    other = _record(full_parser, "--model", "lab-rope", "--length", "512", "--n-global", "4")
    assert other != same and other.name.startswith("entropy-lab-rope-512-w16-")
    assert _record(full_parser, "--model", "lab-rope", "--length", "512", "--windows", "4").name.startswith(
        "entropy-lab-rope-512-w4-"
    )


def test_closed_pipe_exits_quietly():
    code = "import sys\nfrom lminf_diag.cli.main import main\nsys.exit(main(['models', '--json']))\n"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written (`| head -0`)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]


def test_window_within_training_length_warns_before_the_run(tmp_path):
    out = tmp_path / "run"
    argv = ["entropy", "--model", "lab-rope", "--length", "96", "--windows", "1", "--baseline-only",
            "--out", str(out)]
    done = _python(f"import sys\nfrom lminf_diag.cli.main import main\nsys.exit(main({argv!r}))")
    assert done.returncode == 0, done.stderr[-2000:]
    warning = next(line for line in done.stderr.splitlines() if line.startswith("warning:"))
    assert "does not exceed the training length (128)" in warning
    assert "--model lab-rope" in warning and "--train-len" in warning
    assert done.stderr.index(warning) < done.stderr.index("forward over 96 tokens")


def test_plotlyjs_cdn_page_is_small_and_allowed(tmp_path):
    from lminf_diag.report.page import CDN, head, plotlyjs

    with plotlyjs("cdn"):
        page = head("t", 1, "X" * 1000)
    assert f'<script src="{CDN}/plotly-' in page and "X" * 1000 not in page
    assert f"script-src {CDN}" in page
    parser = build_parser({"entropy": verb_modules()["entropy"]})
    assert parser.parse_args(["entropy"]).plotlyjs == "inline"
    assert parser.parse_args(["entropy", "--plotlyjs", "cdn"]).plotlyjs == "cdn"
