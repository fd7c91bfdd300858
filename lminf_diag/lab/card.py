"""The model card (``README.md``) written next to each trained lab model.

Example:
    >>> text = model_card({"name": "lab-x", "description": "d", "train_len": 128, "settings": {"steps": 3}})
    >>> text.splitlines()[0]
    '# lab-x'
"""

from __future__ import annotations

from typing import Any

TOLERANCE = 0.02  # nats per byte: re-trained models' final and held-out losses agree to this


def model_card(meta: dict[str, Any]) -> str:
    """Markdown card from the metadata that `save_run` writes to ``lminf_diag.json``."""
    s = meta.get("settings", {})
    books = ", ".join(s.get("books", []))
    return f"""# {meta.get("name")}

{meta.get("description", "")}, seed {s.get("seed")}. One of the lminf_diag lab models (four
position schemes, three seeds each): small causal LMs trained by the toolkit itself at a short
training length, so the out-of-distribution factors past the training length can be reproduced
and compared across position-encoding schemes in seconds.

| | |
|---|---|
| architecture | `{meta.get("model_class")}`, {meta.get("n_params", "?")} parameters, scheme `{meta.get("scheme")}` |
| vocabulary | bytes (257 ids: 0-255 and `<|endoftext|>`) |
| training length | {meta.get("train_len")} tokens (bytes) |
| data | {books} (bundled public-domain books); held out: {meta.get("held_out_book")} |
| recipe | {s.get("steps")} steps x {s.get("batch_size")} sequences, AdamW lr {s.get("lr")} (warm-up {s.get("warmup")}, cosine), weight decay {s.get("weight_decay")}, clip {s.get("grad_clip")}, seed {s.get("seed")}, {s.get("threads")} CPU threads, float32 |
| final training loss | {meta.get("final_loss")} nats/byte (mean of the last 50 steps) |
| held-out loss | {meta.get("held_out_nll")} nats/byte at the training length |
| weights sha256 | `{meta.get("weights_sha256")}` (over sorted parameter names and float32 bytes) |
| trained with | torch {meta.get("torch")}, transformers {meta.get("transformers")}, {meta.get("seconds")} s |

## Re-create

```
python -m lminf_diag.lab.train --out lminf_diag/lab/weights --only {meta.get("name")} --force
```

With the same torch build and thread count the weights are bit-identical (same sha256). On
other builds or thread counts float32 summation order differs; the first {len(meta.get("first_losses", []))}
step losses (in `lminf_diag.json`) agree to 1e-4 and the final and held-out losses to {TOLERANCE}
nats/byte.

## Intended use

Diagnostics only (`load_model("{meta.get("name")}")`, `diag lab`): the model has seen under one
megabyte of text and generates plausible-looking but meaningless English.
"""
