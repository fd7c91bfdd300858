"""The ``diag`` command line and run directories, in-process on a tiny saved llama + word tokenizer."""

from __future__ import annotations

import json
import re

import pytest

from lminf_diag.cli import options
from lminf_diag.cli.main import build_parser, main
from lminf_diag.cli.progress import Progress
from lminf_diag.errors import RunDirectoryError
from lminf_diag.runs import RUN_FILE, RunDir, trace_step
from tests.synthetic import make_trace

TINY = ["--length", "96", "--n-local", "32", "--n-global", "2", "--train-len", "32", "--windows", "2"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """tiny_model("llama") saved with a WordLevel tokenizer of the 127 commonest words of the default book."""
    from tests.tiny import save_tiny_llama_folder

    return str(save_tiny_llama_folder(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- diag models, help


def test_models_lists_embedded_and_families(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "smollm2-135m (default)" in out
    assert re.search(r"llama\s+rotary \(RoPE\)", out) and re.search(r"bloom\s+ALiBi", out)
    assert "Not supported (absolute positions)" in out and "gpt2" in out


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    data = json.loads(out)
    assert code == 0
    assert [e["name"] for e in data["embedded"]][0] == "smollm2-135m"
    assert {"model_type": "llama", "position": "rope"}.items() <= data["supported"][0].items()
    gpt2 = next(f for f in data["unsupported"] if f["model_type"] == "gpt2")
    assert gpt2["position"] == "absolute" and "relative positions" in gpt2["why"]


@pytest.mark.parametrize("verb", ["models", "generate", "entropy", "logits", "pca", "report"])
def test_every_help_has_examples(capsys, verb):
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0 and "Examples:" in out and f"diag {verb}" in out


def test_top_level_help_and_no_verb(capsys):
    assert run_cli(capsys, "--help")[1].count("Examples:") == 1
    code, _, err = run_cli(capsys)
    assert code == 2 and "VERB" in err


# ---------------------------------------------------------------- analysis verbs end to end


def test_entropy_writes_report_and_resumes(capsys, tiny_folder, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "entropy", "--model", tiny_folder, *TINY, "--out", out)
    assert code == 0, err
    assert (out / "entropy.html").is_file() and (out / RUN_FILE).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert {k["label"] for k in summary["key_figures"]} == {"baseline", "lambda"}
    assert all(set(k) >= {"figure", "label", "estimate", "ci_low", "ci_high", "n", "unit"} for k in summary["key_figures"])
    assert {(v["factor"], v["label"]) for v in summary["verdicts"]} == {
        ("entropy_growth", "baseline"), ("entropy_growth", "lambda")}
    assert summary["config"]["windows"] == 2 and summary["versions"]["git"]
    assert summary["meta"]["train_len"] == 32 and summary["meta"]["n_local"] == 32
    assert "entropy slope past T" in stdout and "report:" in stdout and "verdict" in stdout
    assert "[1/4] window 1/2 (carroll-alice), baseline: forward over 96 tokens" in err and "left" in err
    info = json.loads((out / RUN_FILE).read_text())
    assert list(info["steps"]) == ["trace:baseline", "trace:lambda", "trace:baseline@w1", "trace:lambda@w1"]
    assert info["args"]["length"] == 96 and info["args"]["stride"] == 1 and info["args"]["windows"] == 2
    assert "torch" in info["versions"] and "git" in info and info["created"]
    assert all(s["seconds"] is not None for s in info["steps"].values())

    code, stdout, err = run_cli(capsys, "entropy", "--model", tiny_folder, *TINY, "--out", out)
    assert code == 0
    assert "skipped 4 finished capture step(s)" in stdout
    assert "loading model" not in err  # nothing left to capture: the model is not even loaded

    other = [a if a != "96" else "64" for a in TINY]
    code, _, err = run_cli(capsys, "entropy", "--model", tiny_folder, *other, "--out", out)
    assert code == 2
    assert err.startswith("error: ") and "length: 96 in the saved run, 64 now" in err
    assert "--overwrite" in err and "another --out" in err and "Traceback" not in err

    code, _, err = run_cli(capsys, "entropy", "--model", tiny_folder, *other, "--out", out, "--overwrite")
    assert code == 0, err
    assert json.loads((out / RUN_FILE).read_text())["args"]["length"] == 64


def test_other_verbs_reuse_the_same_captures(capsys, tiny_folder, tmp_path):
    out = tmp_path / "shared"
    assert run_cli(capsys, "logits", "--model", tiny_folder, *TINY, "--out", out)[0] == 0
    code, stdout, _ = run_cli(capsys, "pca", "--model", tiny_folder, *TINY, "--out", out, "--json")
    assert code == 0
    payload = json.loads(stdout)  # with --json, stdout is only the JSON document
    assert payload["report"].endswith("pca.html") and set(payload["sections"]) == {"positions"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["sections"]) == {"logits", "positions"} and set(summary["reports"]) == {
        "logits",
        "pca",
    }
    assert {v["factor"] for v in summary["verdicts"]} == {"logit_explosion", "implicit_position"}


def test_report_verb_and_rebuild_from_folder(capsys, tiny_folder, tmp_path):
    out = tmp_path / "rep"
    args = ["report", "--model", tiny_folder, *TINY, "--mode", "lambda", "--mode", "window", "--out", out]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    html = (out / "report.html").read_text()
    for title in ("Attention logits", "Attention entropy", "Implicit absolute position", "Loss by position"):
        assert title in html
    assert "[6/6] window 2/2 (bryant-stories), window" in err and "loss_breakdown" in stdout

    again = tmp_path / "again"
    code, stdout, err = run_cli(capsys, "report", out, "--model", "no-such-model", "--out", again)
    assert code == 0, err  # saved traces only: the model is never loaded
    assert (again / "report.html").is_file() and "loading model" not in err
    other = tmp_path / "rep2"
    assert (
        run_cli(capsys, "entropy", "--model", tiny_folder, *TINY, "--baseline-only", "--out", other)[0] == 0
    )
    both = tmp_path / "both"
    code, stdout, err = run_cli(capsys, "report", out, other, "--out", both, "--json")
    assert code == 0, err
    labels = list(dict.fromkeys(k["label"] for k in json.loads(stdout)["key_figures"]))
    assert labels == ["rep:baseline", "lambda", "window", "rep2:baseline"]


def test_generate_prints_both_continuations(capsys, tiny_folder):
    args = [
        "generate",
        "--model",
        tiny_folder,
        "--length",
        "40",
        "--max-new-tokens",
        "4",
        "--train-len",
        "32",
    ]
    code, stdout, err = run_cli(capsys, *args, "--n-local", "16")
    assert code == 0, err
    assert "=== baseline:" in stdout and "=== lambda:" in stdout and "tokens/s" in stdout
    code, stdout, _ = run_cli(capsys, *args, "--patched-only", "--json", "--prompt-text", "Alice said")
    runs = json.loads(stdout)["runs"]
    assert (
        list(runs) == ["lambda"] and runs["lambda"]["new_tokens"] <= 4 and runs["lambda"]["tokens_per_s"] > 0
    )


# ---------------------------------------------------------------- bad input: one-line errors, exit 2


def test_unknown_model_lists_the_embedded_names(capsys, tmp_path):
    code, _, err = run_cli(capsys, "entropy", "--model", "no-such-model", "--out", tmp_path / "x")
    assert code == 2 and err.startswith("error: ") and "smollm2-135m" in err and "Traceback" not in err


def test_text_too_short_mentions_repeat(capsys, tiny_folder, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Alice was beginning to get very tired of sitting by her sister.")
    code, _, err = run_cli(
        capsys, "entropy", "--model", tiny_folder, *TINY, "--text", short, "--out", tmp_path / "o"
    )
    assert code == 2 and re.search(r"(^|\n)error: The text has 13 tokens", err) and "--repeat" in err
    assert not (tmp_path / "o").exists()  # a failed start leaves no run folder behind


def test_n_local_zero_is_explained(capsys, tmp_path):
    code, _, err = run_cli(capsys, "entropy", "--n-local", "0", "--out", tmp_path / "o")
    assert code == 2
    assert "error: argument --n-local: must be >= 1, got 0" in err and "local window" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["entropy", "--layers", "a,b"], "comma-separated layer indices"),
        (["entropy", "--stride", "0"], "must be >= 1"),
        (["entropy", "--mode", "lamda"], "invalid choice: 'lamda'"),
        (["entropy", "--baseline-only", "--patched-only"], "not allowed with argument"),
        (["entropy", "--text", "no-such-book"], "Bundled books:"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "o")
    assert code == 2 and "error: " in err and message in err and "Traceback" not in err


def test_layers_out_of_range(capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(
        capsys, "entropy", "--model", tiny_folder, *TINY, "--layers", "7", "--out", tmp_path / "o"
    )
    assert code == 2 and "out of range" in err and "0..1" in err


def test_unrelated_out_folder_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "entropy", "--out", tmp_path)
    assert code == 2 and "not a run directory" in err and "--overwrite" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupt_says_how_to_resume(capsys, monkeypatch, tmp_path):
    import lminf_diag.cli.pipeline as pipeline

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_session", stop)
    code, _, err = run_cli(capsys, "entropy", "--out", tmp_path / "o")
    assert code == 130 and "same command" in err and str(tmp_path / "o") in err


# ---------------------------------------------------------------- options, progress, run directories


def test_stride_rule():
    assert [options.resolve_stride("auto", n) for n in (96, 1024, 4096, 16384, 65536)] == [1, 1, 16, 64, 256]
    assert options.resolve_stride(3, 16384) == 3


def test_default_out_and_labels():
    assert str(options.default_out("entropy", "HuggingFaceTB/SmolLM2-135M", 8192)) == (
        "runs/entropy-HuggingFaceTB_SmolLM2-135M-8192"
    )
    args = build_parser().parse_args(["report", "--baseline-only"])
    assert options.labels(args) == ["baseline"]


def test_progress_estimates_time_left():
    import io

    out = io.StringIO()
    ticks = iter([0.0, 10.0, 10.0, 30.0, 30.0, 45.0])
    p = Progress(4, stream=out, clock=ticks.__next__)
    p.skip("baseline")
    for name in ("lambda", "window", "cap_only"):
        with p.step(name):
            pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/4] baseline: already done, skipped"
    assert lines[2] == "[2/4] lambda ... 10 s, about 20 s left"
    assert lines[4] == "[3/4] window ... 20 s, about 15 s left"
    assert lines[-1] == "[4/4] cap_only ... 15 s, done"


def test_rundir_save_load_and_atomic_layout(tmp_path):
    run = RunDir(tmp_path / "r", {"model": "m", "modes": ("lambda",)})
    assert not (tmp_path / "r").exists()  # nothing is written before the first result
    trace = make_trace(n=64, train_len=16)
    run.save_trace("baseline", trace, seconds=2.5)
    run.save_json("summary.json", {"x": float("nan")})
    again = RunDir(tmp_path / "r", {"modes": ["lambda"], "model": "m"})
    assert again.has(trace_step("baseline")) and again.trace_labels() == ["baseline"]
    assert again.seconds == {"trace:baseline": 2.5}
    assert again.load_trace("baseline").entropy.shape == trace.entropy.shape
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == {"x": None}
    leftovers = [p.name for p in (tmp_path / "r").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_rundir_conflicts_and_overwrite(tmp_path):
    RunDir(tmp_path / "r", {"model": "m", "length": 64}).save_trace(
        "baseline", make_trace(n=64, train_len=16)
    )
    with pytest.raises(RunDirectoryError, match=r"model: \"m\" in the saved run, \"n\" now"):
        RunDir(tmp_path / "r", {"model": "n", "length": 64})
    fresh = RunDir(tmp_path / "r", {"model": "n", "length": 64}, overwrite=True)
    assert (tmp_path / "r" / "traces" / "baseline").is_dir()  # cleared only when the new run saves
    fresh.mark_done("analysis", 1.0)
    assert not (tmp_path / "r" / "traces").exists() and fresh.done_steps == ["analysis"]


def test_rundir_refuses_to_clear_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(RunDirectoryError, match="refusing to clear"):
        RunDir(tmp_path, {}, overwrite=True)
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        RunDir.open_existing(tmp_path)


def test_report_with_loss_references_resumes(capsys, tiny_folder, tmp_path):
    out = tmp_path / "refs"
    args = ["report", "--model", tiny_folder, *TINY, "--recompute", "--recompute-stride", "16", "--control", "shuffled",
            "--out", out, "--json"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    payload = json.loads(stdout)
    labels = {k["label"] for k in payload["key_figures"] if k["section"] == "perplexity"}
    assert {"recompute", "baseline (shuffled)"} <= labels
    loss = {v["label"]: v for v in payload["verdicts"] if v["factor"] == "loss_breakdown"}
    assert loss["baseline"]["figure"] == "NLL past T minus recomputed reference"
    assert any(line.startswith("Contamination control") for line in payload["findings"])
    assert "re-computation reference" in payload["meta"] and "contamination control" in payload["meta"]
    steps = json.loads((out / RUN_FILE).read_text())["steps"]
    assert {"recompute:w0", "recompute:w1", "trace:control", "trace:control@w1"} <= set(steps)
    code, stdout, err = run_cli(capsys, *args)  # everything is kept: nothing is computed again
    assert code == 0 and "loading model" not in err


def test_baseline_length_stops_the_baseline_and_says_so(capsys, tiny_folder, tmp_path):
    out = tmp_path / "stop"
    args = ["entropy", "--model", tiny_folder, *TINY, "--baseline-length", "64", "--out", out, "--json"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "the baseline reads the first 64 of 96 tokens" in err
    assert "baseline: forward over 64 tokens" in err and "lambda: forward over 96 tokens" in err
    payload = json.loads(stdout)
    assert any("reads the first 64 of the 96 tokens" in line for line in payload["findings"])
    assert json.loads((out / RUN_FILE).read_text())["args"]["baseline_length"] == 64
    trace = RunDir.open_existing(out).load_trace("baseline")
    assert trace.meta.extra["stopped_at"] == 64 and trace.n_tokens == 96
    code, _, err = run_cli(capsys, "entropy", "--model", tiny_folder, *TINY, "--baseline-length", "x", "--out", out)
    assert code == 2 and "baseline tokens, or 'auto'" in err
