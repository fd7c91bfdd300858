"""The lab: byte tokenizer, deterministic training, the shipped models, and what they show.

The real-model assertions run the shipped lab-rope model (trained at T = 128 bytes) on the
held-out book; thresholds are stated next to the values measured when the weights were made.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.lab.copy_task import copy_gain, copy_sequences
from lminf_diag.lab.registry import lab_available, lab_folder
from lminf_diag.lab.run import loss_result
from lminf_diag.lab.specs import LAB_SPECS, TrainSettings, lab_names, lab_spec, scheme_names
from lminf_diag.lab.tokenizer import byte_tokenizer, encode_bytes
from lminf_diag.lab.train import EXACT_STEPS, train_model, weights_digest
from lminf_diag.models import load_model, model_info

from . import reference
from .tiny import rope_info

SHIPPED = pytest.mark.skipif(not all(lab_available(n) for n in scheme_names()), reason="lab weights not shipped")
SHIPPED_NAMES = [n for n in lab_names() if lab_available(n)]  # seed 0 of every scheme, and the seeds shipped


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer()
    text = "Ünïcødé ☃ and\ttabs\n\n  spaces, digits 12345."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == encode_bytes(text) and max(ids) < 256
    assert tok.decode(ids) == text
    assert tok.eos_token_id == 256 and len(tok) == 257


def test_training_is_deterministic():
    settings = TrainSettings(steps=3, batch_size=2, warmup=1)
    a = train_model(lab_spec("lab-rope"), settings)
    b = train_model(lab_spec("lab-rope"), settings)
    assert a.losses == b.losses
    assert weights_digest(a.model) == weights_digest(b.model)
    c = train_model(lab_spec("lab-rope"), TrainSettings(steps=3, batch_size=2, warmup=1, seed=1))
    assert weights_digest(c.model) != weights_digest(a.model)


def test_copy_task_layout_and_gain_arithmetic():
    """Hand-made case: the second copy sits exactly d after the first; the gain is control minus
    repeat over the second copy without its first token (written out by hand below)."""
    text = bytes(range(65, 91)) * 40
    rep, ctl, (a, b) = copy_sequences(text, distance=40, length=8, prefix=5, seed=3)
    assert (a, b) == (6, 46) and len(rep) == len(ctl) == 1 + 5 + 40 + 8 and rep[0] == 256
    assert rep[a : a + 8] == rep[b : b + 8] and all(97 <= t <= 122 for t in rep[b:])  # lowercase letters
    assert ctl[b:] == rep[b:] and ctl[:a] == rep[:a] and ctl[a + 8 : b] == rep[a + 8 : b]
    assert ctl[a : a + 8] != rep[a : a + 8]  # the control's first place holds a fresh string
    n = len(rep)
    nll_rep, nll_ctl = np.full(n, 1.0), np.full(n, 1.0)
    nll_rep[b : b + 8] = [9.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]  # position b (first letter) is not scored
    nll_ctl[b : b + 8] = [0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    want = (7 * 3.0 - (3 * 0.5 + 4 * 1.0)) / 7
    assert copy_gain(nll_rep, nll_ctl, b, 8) == pytest.approx(want)
    with pytest.raises(InvalidArgumentError):
        copy_sequences(text, distance=4, length=8, prefix=5, seed=0)  # d < L: the copies would overlap


def test_loss_pass_wrapper_gives_verdicts_over_windows():
    """Per-token losses (K, N) through `loss_result`: a loss that doubles past 2T is a breakdown, a flat
    one is not; every figure has n = K windows."""
    T, k = 64, 5
    rng = np.random.default_rng(0)
    flat = 2.0 + 0.05 * rng.standard_normal((k, 8 * T))
    rising = flat.copy()
    rising[:, 2 * T :] += 2.0
    for arr in (flat, rising):
        arr[:, 0] = np.nan
    r = loss_result({"baseline": rising, "lambda": flat}, T, 0.1, [f"w{i}" for i in range(k)])
    verdicts = {v.label: v.verdict for v in r.verdicts() if v.factor == "loss_breakdown"}
    assert verdicts == {"baseline": "present", "lambda": "absent"}
    assert {e.n for e in r.key_figures()} == {k}


def test_lab_cell_record_round_trips_through_json():
    from lminf_diag.analyze.estimate import Estimate, Verdict
    from lminf_diag.lab.result import LabCell

    e = Estimate("x", "baseline", 1.0, float("nan"), float("nan"), 1, "u")
    v = Verdict("logit_explosion", "baseline", "present", "x", 0.25, "t")
    cell = LabCell("lab-rope", "rope", 4, 512, 1, [("logits", e)], [v], ["a sentence."], True)
    back = LabCell.from_record(
        "lab-rope", "rope", 4, 512, json.loads(json.dumps(cell.to_record(), allow_nan=False))
    )
    assert back.verdicts == cell.verdicts and back.findings == cell.findings and back.repeated
    ((sec, got),) = back.key_figures
    assert sec == "logits" and got.figure == "x" and got.n == 1 and not got.has_interval


@torch.no_grad()
def test_patch_on_a_model_without_position_encoding_matches_reference():
    """NoPE (GPT-NeoX, rotary_pct 0): LM-Infinite reduces to the Λ-mask; checked against the dense reference."""
    from lminf_diag.lab.specs import Shape
    from lminf_diag.patch import lm_infinite

    torch.manual_seed(0)
    model = lab_spec("lab-nope").build(Shape(hidden=32, layers=2, heads=4, mlp=64), train_len=16).eval()
    assert model_info(model).position == "none" and model_info(model).rotary_dim == 0
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(1))
    for mode in ("lambda", "mask_only", "cap_only", "window"):
        reference.configure(mode, 16, 3, 16, rope_info(model))
        prev = model.config._attn_implementation
        model.set_attn_implementation("lminf_test_reference")
        try:
            want = model(ids).logits
        finally:
            model.set_attn_implementation(prev)
            reference.configure()
        with lm_infinite(model, n_global=3, n_local=16, mode=mode):
            got = model(ids).logits
        assert (got - want).abs().max().item() <= 1e-5, mode


@SHIPPED
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_shipped_model_loads_with_its_scheme_and_training_length(name):
    model, tok = load_model(name)
    info = model_info(model)
    assert info.train_len == 128 and info.train_len_source == "lminf_diag.json"
    assert info.position == lab_spec(name).scheme
    assert (
        tok.decode(tok("The pass key is 4711.", add_special_tokens=False)["input_ids"])
        == "The pass key is 4711."
    )
    meta = json.loads((lab_folder(name) / "lminf_diag.json").read_text())
    assert meta["weights_sha256"] == weights_digest(model)  # the card's digest is of these weights
    assert (lab_folder(name) / "README.md").read_text().startswith(f"# {name}")
    assert sum(p.numel() * 4 for p in model.parameters()) < 5e6  # a few MB


@SHIPPED
@pytest.mark.parametrize("name", [n for n in SHIPPED_NAMES if n.endswith(("-s1", "-s2"))][:2] + scheme_names())
def test_retraining_reproduces_the_recorded_first_steps(name):
    """The card's re-create command: the first steps of a re-run match the recorded losses."""
    meta = json.loads((lab_folder(name) / "lminf_diag.json").read_text())
    s = meta["settings"]
    assert s["seed"] == lab_spec(name).seed
    settings = TrainSettings(**{**s, "books": tuple(s["books"])})
    run = train_model(lab_spec(name), settings, stop_after=EXACT_STEPS)
    assert np.allclose(run.losses, meta["first_losses"], atol=1e-4), (
        run.losses[:3],
        meta["first_losses"][:3],
    )


def test_lab_specs_cover_four_schemes_three_seeds_one_block():
    assert sorted({s.scheme for s in LAB_SPECS}) == ["alibi", "none", "rope", "rope_partial"]
    for scheme in ("alibi", "none", "rope", "rope_partial"):
        assert sorted(s.seed for s in LAB_SPECS if s.scheme == scheme) == [0, 1, 2]
    # the three rotary variants are one model class; only rotary_pct differs
    neox = {s.scheme: s.options.get("rotary_pct") for s in LAB_SPECS if s.model_class == "GPTNeoXForCausalLM"}
    assert neox == {"rope": 1.0, "rope_partial": 0.25, "none": 0.0}


def test_scheme_figures_average_seeds_and_verdicts_need_every_seed():
    """Hand-computed: three seeds' estimates -> their mean with a t interval over seeds (n = 3); the
    verdict holds only when all seeds reach it."""
    from scipy import stats

    from lminf_diag.analyze.estimate import Estimate, Verdict
    from lminf_diag.lab.seeds import across_seeds, consensus

    vals = [0.5, 0.9, 0.7]
    figs = [Estimate("f", f"{m} 8xT:baseline", v, v - 0.1, v + 0.1, 16, "u") for m, v in
            zip(["lab-rope", "lab-rope-s1", "lab-rope-s2"], vals, strict=True)]
    (e,) = across_seeds(figs)
    half = stats.t.ppf(0.975, 2) * np.std(vals, ddof=1) / np.sqrt(3)
    assert e.label == "lab-rope 8xT:baseline" and e.n == 3
    assert e.estimate == pytest.approx(0.7) and e.ci_high - e.estimate == pytest.approx(half)
    agree = [Verdict("entropy_growth", f"{m}:lambda", "absent") for m in ["lab-nope", "lab-nope-s1"]]
    mixed = [Verdict("entropy_growth", f"{m}:baseline", w) for m, w in [("lab-nope", "present"),
                                                                        ("lab-nope-s1", "absent")]]
    got = {v.label: v.verdict for v in consensus(agree + mixed)}
    assert got == {"lab-nope:lambda": "absent", "lab-nope:baseline": "inconclusive"}


def test_diag_lab_rejects_unknown_model(capsys):
    from lminf_diag.cli.main import main

    assert main(["lab", "--models", "lab-xyz"]) == 2
    assert "lab-rope" in capsys.readouterr().err  # argparse lists the choices


ROPE_ARGS = [
    "--models",
    "lab-rope",
    "--seeds",
    "1",
    "--multiples",
    "4",
    "--windows",
    "4",
    "--fluency-multiple",
    "4",
    "--copy-trials",
    "4",
    "--copy-distances",
    "0.25,2",
]


@pytest.fixture(scope="module")
def rope_lab(tmp_path_factory, require_lab):
    """`diag lab` on lab-rope at 4x T over 4 windows (loss pass to 4x T, copy task at T/4 and 2T): the
    JSON payload, the run folder and stderr of a second, resumed run."""
    import contextlib
    import io

    from lminf_diag.cli.main import main

    require_lab("lab-rope")
    out = tmp_path_factory.mktemp("lab") / "run"
    argv = ["lab", *ROPE_ARGS, "--out", str(out), "--json"]
    stdout, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    payload = json.loads(stdout.getvalue())
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(argv) == 0  # again: every cell loads from the run folder
    return payload, out, err.getvalue()


def test_diag_lab_writes_the_shared_schema_and_resumes(rope_lab):
    payload, out, err = rope_lab
    assert {"config", "versions", "key_figures", "verdicts", "findings"} <= set(payload)
    assert (out / "lab.html").is_file() and (out / "summary.json").is_file()
    assert err.count("skipped") >= 3 and "plain and LM-Infinite ..." not in err
    labels = {r["label"] for r in payload["key_figures"]}
    assert {"lab-rope 4xT:baseline", "lab-rope 4xT:lambda", "lab-rope:baseline"} <= labels


def test_rope_lab_verdicts_come_from_windows(rope_lab):
    """lab-rope at 4x T, 4 windows: the baseline's logits explode past T (measured: paired excess net of
    the T/2 null 0.70, CI 0.61..0.79) and its entropy grows (net slope 0.76, CI 0.37..1.14); LM-Infinite's
    are not present. Every verdict's figure is an estimate over the 4 windows."""
    payload, _, _ = rope_lab
    v = {(r["factor"], r["label"]): r["verdict"] for r in payload["verdicts"]}
    assert v[("logit_explosion", "lab-rope 4xT:baseline")] == "present"
    assert v[("logit_explosion", "lab-rope 4xT:lambda")] != "present"
    assert v[("entropy_growth", "lab-rope 4xT:baseline")] == "present"
    assert v[("entropy_growth", "lab-rope 4xT:lambda")] != "present"
    figures = {(r["figure"], r["label"]): r for r in payload["key_figures"]}
    for r in payload["verdicts"]:
        assert figures[(r["figure"], r["label"])]["n"] == 4, r


def test_rope_lab_copy_task_is_reported_honestly(rope_lab):
    """The lab models are near trigram level: no copy gain at T/4 (lab-rope, 4 trials: an interval
    around 0, never above the 0.1-nat margin); under LM-Infinite a string 2T back is outside the
    window, so its gain is 0 by construction, and the findings say so."""
    payload, _, _ = rope_lab
    copy = {
        (r["figure"], r["label"]): r for r in payload["key_figures"] if r["figure"].startswith("copy gain")
    }
    inside = copy[("copy gain at d=32 (0.25T)", "lab-rope:baseline")]
    assert inside["n"] == 4 and inside["ci_low"] < 0.1 and abs(inside["estimate"]) < 0.1  # not "present"
    assert abs(copy[("copy gain at d=256 (2T)", "lab-rope:lambda")]["estimate"]) < 1e-3
    assert any("copy task" in line and "uses the string at distance d?" in line for line in payload["findings"])
    assert any("near 0 by construction, not a measurement" in line for line in payload["findings"])
