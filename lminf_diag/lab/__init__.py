"""The lab: small models trained by the toolkit, one per position-encoding scheme.

- `specs`: the four models (RoPE, ALiBi, partial RoPE, none) and the shared training recipe;
- `tokenizer`: the byte-level tokenizer they share;
- `train`: ``python -m lminf_diag.lab.train`` re-creates the shipped weights;
- `card`: their model cards;
- `run` / `result`: ``run_lab`` (``diag lab``) compares the OOD factors across schemes.

Example:
    >>> from lminf_diag.lab import lab_names
    >>> lab_names()
    ['lab-rope', 'lab-alibi', 'lab-partial', 'lab-nope']
"""

from lminf_diag.lab.specs import LAB_SPECS, LabSpec, TrainSettings, lab_names, lab_spec

__all__ = ["LAB_SPECS", "LabSpec", "TrainSettings", "lab_names", "lab_spec"]
