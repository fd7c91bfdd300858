"""Reliability: killed runs resume, runs are deterministic, numerical failures are loud, loading is
safe by default, and the model comes back intact (and can be freed) after any exception.

Not repeated here: pickle refusal in `load_model` (tests/test_models.py) and the plain
`lm_infinite` + `record` exception test (tests/test_capture.py).
"""

from __future__ import annotations

import collections
import gc
import json
import re
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from lminf_diag import lm_infinite, patch, record, unpatch
from lminf_diag.capture.compare import compare, run_trace
from lminf_diag.capture.trace import ARRAY_FIELDS
from lminf_diag.cli.main import main
from lminf_diag.errors import InvalidArgumentError, ModelNotFoundError, NumericalError
from lminf_diag.patch.api import current_spec
from lminf_diag.patch.router import router_of
from lminf_diag.runs import RUN_FILE, RunDir

from .tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--n-local", "32", "--n-global", "2", "--train-len", "32", "--mode", "lambda", "--mode", "window",
            "--windows", "1"]
LABELS = ["baseline", "lambda", "window"]


def _tokenizer():
    """A WordLevel tokenizer of the 127 commonest words of the default book (as tests/test_cli.py)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lminf_diag.data import default_text, load_text

    text, _ = load_text(default_text())
    vocab = {"[UNK]": 0}
    for word, _ in collections.Counter(re.findall(r"\w+|[^\w\s]", text)).most_common(127):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rel") / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return str(folder)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_traces_close(run_a: Path, run_b: Path, labels, exact: bool = False) -> None:
    a, b = RunDir.open_existing(run_a), RunDir.open_existing(run_b)
    for label in labels:
        ta, tb = a.load_trace(label), b.load_trace(label)
        for name in ARRAY_FIELDS:
            xa, xb = np.asarray(getattr(ta, name)), np.asarray(getattr(tb, name))
            assert xa.shape == xb.shape, (label, name)
            if exact:
                assert np.array_equal(xa, xb, equal_nan=True), (label, name)
            elif xa.dtype == np.float16:  # stored in half precision: one unit in the last place
                assert np.allclose(xa.astype(float), xb.astype(float), rtol=2e-3, atol=2e-3, equal_nan=True), (
                    label, name)
            elif xa.dtype.kind == "f":
                assert np.allclose(xa, xb, rtol=1e-4, atol=1e-5, equal_nan=True), (label, name)
            else:
                assert np.array_equal(xa, xb), (label, name)


# ---------------------------------------------------------------- killed runs resume


def test_killed_run_resumes_and_matches_an_uninterrupted_run(capsys, tiny_folder, tmp_path):
    """SIGKILL after the first trace is recorded; the same command skips it, finishes, and its
    traces equal those of a run that was never interrupted."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    argv = ["entropy", "--model", tiny_folder, "--length", "256", *SETTINGS]
    log_out, log_err = (tmp_path / "out.txt").open("w"), (tmp_path / "err.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lminf_diag.cli.main", *argv, "--out", str(killed)],
        cwd=ROOT,
        stdout=log_out,
        stderr=log_err,
    )
    steps: list = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                steps = list(json.loads((killed / RUN_FILE).read_text())["steps"])
            except (OSError, ValueError, KeyError):
                steps = []
            if steps:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # as a crash or an OOM kill would: no cleanup at all
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        log_out.close(), log_err.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "err.txt").read_text()[-2000:]
    info = json.loads((killed / RUN_FILE).read_text())
    done = list(info["steps"])
    assert done[:1] == ["trace:baseline"] and "trace:window" not in done, done  # killed midway

    code, out, err = run_cli(capsys, *argv, "--out", killed)
    assert code == 0, err
    assert f"resuming {killed}: skipped {len(done)} finished capture step(s)" in out
    assert "[1/3] window 1/1 (carroll-alice), baseline: forward over 256 tokens: already done, skipped" in err
    assert re.search(r"\[3/3\] window 1/1 \(carroll-alice\), window: forward over 256 tokens \.\.\. [0-9.]+ s, done", err), err
    assert list(json.loads((killed / RUN_FILE).read_text())["steps"]) == [f"trace:{x}" for x in LABELS]
    assert (killed / "entropy.html").is_file()

    code, _, err = run_cli(capsys, *argv, "--out", whole)
    assert code == 0, err
    assert_traces_close(killed, whole, LABELS)
    sa = json.loads((killed / "summary.json").read_text())["sections"]
    sb = json.loads((whole / "summary.json").read_text())["sections"]
    assert sa.keys() == sb.keys() == {"entropy"}
    assert [k["figure"] for k in sa["entropy"]["key_figures"]] == [k["figure"] for k in sb["entropy"]["key_figures"]]


def test_same_command_twice_gives_identical_numbers(capsys, tiny_folder, tmp_path):
    argv = ["entropy", "--model", tiny_folder, "--length", "96", *SETTINGS, "--seed", "3"]
    for name in ("a", "b"):
        code, _, err = run_cli(capsys, *argv, "--out", tmp_path / name)
        assert code == 0, err
    sa, sb = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    assert sa["sections"] == sb["sections"] and sa["key_figures"] == sb["key_figures"]
    assert sa["sections"]["entropy"]  # not vacuous
    assert_traces_close(tmp_path / "a", tmp_path / "b", LABELS, exact=True)


# ---------------------------------------------------------------- numerical failures are loud


def _ids(n=24):
    return torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(5))


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model):
    return (
        _hooks(model),
        model.config._attn_implementation,
        router_of(model) is None,
        sum("forward" in m.__dict__ for m in model.modules()),
    )


def test_inf_in_one_layer_raises_naming_layer_and_position():
    model = tiny_model("llama")
    before = _state(model)

    def poison(_mod, _args, out):
        out = out.clone()
        out[0, 5] = float("inf")
        return out

    handle = model.model.layers[1].self_attn.q_proj.register_forward_hook(poison)
    try:
        with pytest.raises(NumericalError, match=r"layer 1 at position 5 \(lambda\)") as err:
            run_trace(model, _ids(), label="lambda", patch=dict(n_global=2, n_local=8))
        assert "float32" in str(err.value)  # says what to try
        with pytest.raises(NumericalError, match=r"layer 1 at position 5 \(baseline\)"):
            compare(model, input_ids=_ids(), modes=("lambda",), n_global=2, n_local=8)
        silent = run_trace(model, _ids(), check_finite=False)  # the explicit opt-out keeps the NaN
        assert np.isnan(silent.entropy[1, :, 5]).all() and np.isfinite(silent.entropy[0]).all()
    finally:
        handle.remove()
    assert _state(model) == before


def test_inf_in_the_logits_raises_naming_the_position():
    model = tiny_model("llama")

    def poison(_mod, _args, out):
        out = out.clone()
        out[6] = float("inf")  # hidden row 6 predicts token 7
        return out

    handle = model.lm_head.register_forward_hook(poison)
    try:
        with pytest.raises(NumericalError, match=r"NaN/inf loss at position 7 \(baseline\)"):
            run_trace(model, _ids())
    finally:
        handle.remove()


def _overflowing_fp16_model():
    """Layer 1's query projection so large that fp16 q overflows to inf."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].self_attn.q_proj.weight.mul_(5e4).clamp_(-6e4, 6e4)
    return model.to(torch.float16)


def test_fp16_overflow_raises_not_nan(capsys, tmp_path, tiny_folder):
    model = _overflowing_fp16_model()
    assert torch.isinf(model.model.layers[1].self_attn.q_proj.weight).sum() == 0  # the weights fit fp16
    with pytest.raises(NumericalError, match=r"layer 1 at position 0 \(window\).*float32"):
        run_trace(model, _ids(), label="window", patch=dict(n_global=0, n_local=8, mode="window"))

    folder = tmp_path / "overflow"
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    out = tmp_path / "o"
    code, _, err = run_cli(
        capsys, "entropy", "--model", folder, "--dtype", "float16", "--length", "64", *SETTINGS, "--out", out
    )
    assert code == 2 and re.search(r"error: NaN/inf in the attention of layer 1 at position 0", err), err
    assert "Traceback" not in err
    assert not (out / "summary.json").exists()  # no report or summary made of NaN
    steps = json.loads((out / RUN_FILE).read_text())["steps"] if (out / RUN_FILE).exists() else {}
    assert steps == {}


# ---------------------------------------------------------------- loading is safe by default


def test_trust_remote_code_is_off_unless_asked(monkeypatch, tiny_folder):
    import transformers

    from lminf_diag.models import load_model

    calls = []
    for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code", "absent")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    load_model(tiny_folder)
    assert {name for name, _ in calls} == {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    assert all(value is False for _, value in calls), calls
    calls.clear()
    load_model(tiny_folder, trust_remote_code=True)
    assert calls and all(value is True for _, value in calls), calls


@pytest.mark.parametrize("verb", ["entropy", "generate", "ppl"])
def test_cli_passes_safe_loading_flags(monkeypatch, capsys, tiny_folder, tmp_path, verb):
    import lminf_diag.models as models

    seen = []

    def fake_load(name, **kwargs):
        seen.append(kwargs)
        raise InvalidArgumentError("stop here")

    monkeypatch.setattr(models, "load_model", fake_load)
    base = [verb, "--model", tiny_folder, "--train-len", "32"]
    base += ["--out", tmp_path / verb] if verb != "generate" else []
    for extra in ([], ["--trust-remote-code", "--allow-pickle"]):
        code, _, err = run_cli(capsys, *base, *extra)
        assert code == 2 and "stop here" in err, err
    assert [(k["trust_remote_code"], k["allow_pickle"]) for k in seen] == [(False, False), (True, True)]


def test_cli_pickle_only_folder_names_the_flag_that_allows_it(capsys, tmp_path):
    folder = tmp_path / "pickled"
    model = tiny_model("llama")
    model.config.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    argv = ["entropy", "--model", folder, "--length", "64", *SETTINGS, "--baseline-only"]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "o")
    assert code == 2 and "pickle" in err and "--allow-pickle" in err
    code, _, err = run_cli(capsys, *argv, "--allow-pickle", "--out", tmp_path / "o2")
    assert code == 0, err
    with pytest.raises(ModelNotFoundError):  # the library default stays strict
        from lminf_diag.models import load_model

        load_model(folder)


# ---------------------------------------------------------------- exceptions leave the model intact


def _freed(model_ref, *others) -> bool:
    gc.collect()
    return model_ref() is None and all(r() is None for r in others)


def test_exception_inside_the_forward_restores_everything_and_frees():
    """An error raised by a layer in the middle of the forward, under lm_infinite + record with
    hidden-state hooks: routing, hooks and implementation come back; model and trace can be freed."""
    model = tiny_model("llama")
    ids = _ids()
    with torch.no_grad():
        base = model(ids).logits
    before = _state(model)

    def boom(*_):
        raise RuntimeError("boom in layer 1")

    handle = model.model.layers[1].mlp.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom in layer 1") as err:
        with lm_infinite(model, n_global=2, n_local=8), record(model, hidden_layers=[1, 2]) as rec:
            model(ids)
    handle.remove()
    assert _state(model) == before
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)
    refs = [weakref.ref(model), weakref.ref(rec), weakref.ref(model.model.layers[0].self_attn)]
    del model, rec, err, base
    assert _freed(*refs)


def test_exception_in_capture_keeps_a_persistent_patch():
    model = tiny_model("llama")
    ids = _ids()
    before = _state(model)
    spec = patch(model, n_global=2, n_local=8)
    with torch.no_grad():
        patched = model(ids).logits
    patched_state = _state(model)
    assert patched_state != before

    with pytest.raises(RuntimeError, match="boom"):
        with record(model, hidden_layers=[1]):
            model(ids)
            raise RuntimeError("boom")
    assert current_spec(model) == spec and _state(model) == patched_state
    assert router_of(model).recorder is None

    with pytest.raises(InvalidArgumentError, match="already active"):  # a second capture is refused
        with record(model) as first:
            with record(model):
                pass
    assert current_spec(model) == spec and _state(model) == patched_state and first is not None
    with torch.no_grad():
        assert torch.equal(model(ids).logits, patched)

    unpatch(model)
    assert _state(model) == before and current_spec(model) is None


def test_exception_in_nested_lm_infinite_restores_the_outer_settings():
    model = tiny_model("llama")
    ids = _ids()
    before = _state(model)
    with lm_infinite(model, n_global=2, n_local=8) as outer:
        with torch.no_grad():
            outer_logits = model(ids).logits
        with pytest.raises(RuntimeError, match="inner"):
            with lm_infinite(model, n_global=0, n_local=4, mode="window") as inner:
                assert current_spec(model) == inner
                with record(model):
                    model(ids)
                    raise RuntimeError("inner")
        assert current_spec(model) == outer and router_of(model).recorder is None
        with torch.no_grad():
            assert torch.equal(model(ids).logits, outer_logits)
    assert _state(model) == before and current_spec(model) is None


@pytest.mark.parametrize("family", ["llama", "mpt"])
def test_a_patched_model_that_is_dropped_is_freed(family):
    """Dropping a model that is still patched frees it and its attention weights (no global
    registry may keep the routed modules alive)."""
    model = tiny_model(family)
    patch(model, n_global=2, n_local=8)
    with torch.no_grad():
        model(_ids())
    attn = next(m for m in model.modules() if type(m).__name__.endswith("Attention"))
    refs = [weakref.ref(model), weakref.ref(attn), weakref.ref(next(attn.parameters()))]
    del model, attn
    assert _freed(*refs)
