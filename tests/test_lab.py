"""The lab: byte tokenizer, deterministic training, the shipped models, and what they show.

The real-model assertions run the shipped lab-rope model (trained at T = 128 bytes) on the
held-out book; thresholds are stated next to the values measured when the weights were made.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lminf_diag.lab.run import LabSettings, fluency_curves, run_lab
from lminf_diag.lab.specs import LAB_SPECS, TrainSettings, lab_names, lab_spec
from lminf_diag.lab.tokenizer import byte_tokenizer, encode_bytes
from lminf_diag.lab.train import EXACT_STEPS, train_model, weights_digest
from lminf_diag.models import load_model, model_info
from lminf_diag.models.lab import lab_available, lab_folder

from . import reference
from .tiny import rope_info

SHIPPED = pytest.mark.skipif(not all(lab_available(n) for n in lab_names()), reason="lab weights not shipped")


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


def test_fluency_curves_analytic():
    T = 64
    nll = {"flat": np.full(16 * T, 2.0), "breaks_at_4T": np.r_[np.full(4 * T, 2.0), np.full(12 * T, 5.0)]}
    ends, curves, ref, until = fluency_curves(nll, T, tolerance=0.1)
    assert ref == {"flat": 2.0, "breaks_at_4T": 2.0}
    assert until["flat"] == 16 * T
    assert 3 * T <= until["breaks_at_4T"] <= 4 * T  # the bin holding position 4T is the first to fail
    assert np.allclose(curves["flat"], 2.0) and ends[-1] == 16 * T - 1


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
@pytest.mark.parametrize("name", lab_names())
def test_shipped_model_loads_with_its_scheme_and_training_length(name):
    model, tok = load_model(name)
    info = model_info(model)
    assert info.train_len == 128 and info.train_len_source == "lminf_diag.json"
    assert info.position == {"lab-rope": "rope", "lab-alibi": "alibi", "lab-partial": "rope_partial",
                             "lab-nope": "none"}[name]
    assert tok.decode(tok("The pass key is 4711.", add_special_tokens=False)["input_ids"]) == "The pass key is 4711."
    meta = json.loads((lab_folder(name) / "lminf_diag.json").read_text())
    assert meta["weights_sha256"] == weights_digest(model)  # the card's digest is of these weights
    assert (lab_folder(name) / "README.md").read_text().startswith(f"# {name}")
    assert sum(p.numel() * 4 for p in model.parameters()) < 5e6  # a few MB


@SHIPPED
@pytest.mark.parametrize("name", lab_names())
def test_retraining_reproduces_the_recorded_first_steps(name):
    """The card's re-create command: the first steps of a re-run match the recorded losses."""
    meta = json.loads((lab_folder(name) / "lminf_diag.json").read_text())
    s = meta["settings"]
    settings = TrainSettings(**{**s, "books": tuple(s["books"])})
    run = train_model(lab_spec(name), settings, stop_after=EXACT_STEPS)
    assert np.allclose(run.losses, meta["first_losses"], atol=1e-4), (run.losses[:3], meta["first_losses"][:3])


def test_lab_specs_cover_four_schemes():
    assert sorted(s.scheme for s in LAB_SPECS) == ["alibi", "none", "rope", "rope_partial"]


@SHIPPED
def test_diag_lab_cli_writes_report_and_resumes(tmp_path, capsys):
    from lminf_diag.cli.main import main

    out = tmp_path / "lab"
    argv = ["lab", "--models", "lab-rope", "lab-nope", "--multiples", "4", "--fluency-multiple", "8",
            "--out", str(out), "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    figures = payload["key_figures"]
    assert set(figures) == {"lab-rope baseline", "lab-rope lambda", "lab-nope baseline", "lab-nope lambda"}
    assert figures["lab-rope baseline"]["lab.multiple"] == 4
    html = (out / "lab.html").read_text()
    assert "Position schemes compared" in html and "lab-nope" in html
    assert main(argv) == 0  # again: every step loads from the run folder
    err = capsys.readouterr().err
    assert err.count("skipped") >= 4 and "plain and LM-Infinite ..." not in err


def test_diag_lab_rejects_unknown_model(capsys):
    from lminf_diag.cli.main import main

    assert main(["lab", "--models", "lab-xyz"]) == 2
    assert "lab-rope" in capsys.readouterr().err  # argparse lists the choices


@pytest.fixture(scope="module")
def rope_lab():
    """lab-rope at 16x its training length (2048 tokens), plain and LM-Infinite, loss to 16x T."""
    if not lab_available("lab-rope"):
        pytest.skip("lab weights not shipped")
    return run_lab(LabSettings(models=("lab-rope",), multiples=(16,), fluency_multiple=16, fluency_windows=4))


def test_rope_lab_model_breaks_past_its_training_length_and_the_patch_fixes_it(rope_lab):
    """Loss: the baseline's rises well above its in-range loss past T; the patched model's stays close.

    Measured when the weights were made (16x T = 2048 bytes of the held-out book): loss beyond T
    over the in-range loss 1.2-1.3 plain, 0.87 patched; plain leaves the 10% band before 2T,
    the patched model never does.
    """
    s = rope_lab.summary()
    base, lam = s["lab-rope baseline"], s["lab-rope lambda"]
    assert base["nll_ratio"] > 1.12, base["nll_ratio"]
    assert lam["nll_ratio"] < 1.0, lam["nll_ratio"]
    assert base["fluent_until"] < 2 * 128 and lam["fluent_until"] == 16 * 128


def test_rope_lab_model_entropy_grows_past_training_length_unless_patched(rope_lab):
    """Entropy: slope past T about 0.9 nats per ln n plain (measured), about 0.02 patched."""
    s = rope_lab.summary()
    assert s["lab-rope baseline"]["entropy_slope_beyond"] > 0.5
    assert abs(s["lab-rope lambda"]["entropy_slope_beyond"]) < 0.1


def test_rope_lab_model_hidden_states_carry_position():
    """Position: a probe reads log-position from hidden states (no position embedding exists):
    best layer R² 0.36 measured, embeddings 0.07; with shuffled positions R² is about 0."""
    from lminf_diag.lab.run import in_range_probe

    if not lab_available("lab-rope"):
        pytest.skip("lab weights not shipped")
    model, _ = load_model("lab-rope")
    r2 = in_range_probe(model, 128)
    assert r2[1:].max() > 0.25 and r2[1:].max() > 3 * r2[0], r2
    assert in_range_probe(model, 128, shuffle=True).max() < 0.05
