"""The embedded SmolLM2-135M (trained at 8192 tokens) on a 16384-token window of a bundled book.

Measured here: unpatched mean NLL over positions 12k-16k collapses (about 7 nats) while the
patched model stays near its own loss at 4k-8k (about 2-3 nats).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    from lminf_diag import load_model

    return load_model("smollm2-135m")


def test_patched_loss_stays_low_past_training_length(embedded):
    from lminf_diag import lm_infinite
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.data import load_text, token_window

    model, tok = embedded
    text, _ = load_text("carroll-alice")
    ids = token_window(tok, text, 16384)
    with torch.no_grad():
        plain = token_nll(model, ids)
        with lm_infinite(model, n_global=10):
            patched = token_nll(model, ids)
    far_plain, far_patched = np.nanmean(plain[12288:]), np.nanmean(patched[12288:])
    mid_patched = np.nanmean(patched[4096:8192])
    print(f"NLL 12k-16k plain {far_plain:.2f} patched {far_patched:.2f}; patched 4k-8k {mid_patched:.2f}")
    assert far_plain > far_patched + 2.0, "the unpatched model should collapse past ~10k tokens"
    assert far_patched < mid_patched + 1.0, "the patched model should stay near its in-range loss"


def test_pretend_training_length_null_is_not_present(embedded):
    """The embedded model (true T = 8192) read at 2048 tokens as if T were 1024: nothing is out of
    distribution, so neither logit explosion nor entropy growth may come out `present`."""
    from lminf_diag import compare_windows
    from lminf_diag.analyze import entropy_growth, logit_explosion

    model, tok = embedded
    with torch.no_grad():
        rep = compare_windows(model, tok, 2048, windows=4, modes=(), hidden_layers=[], stride=8, train_len=1024)
    for result in (logit_explosion(rep), entropy_growth(rep)):
        verdict = result.verdicts()[0]
        print(result.findings()[0])
        assert verdict.label == "baseline" and verdict.verdict != "present", result.findings()
