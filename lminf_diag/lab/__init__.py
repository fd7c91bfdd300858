"""The lab: small models trained by the toolkit, one per position-encoding scheme and seed.

- `specs`: the four schemes (RoPE, ALiBi, partial RoPE, none), three seeds each, and the shared
  training recipe;
- `registry`: registers the shipped ``lab-*`` names with the model loader;
- `seeds`: a scheme's figures and verdicts across its seeds;
- `tokenizer`: the byte-level tokenizer they share;
- `train`: ``python -m lminf_diag.lab.train`` re-creates the shipped weights;
- `card`: their model cards;
- `run` / `result`: ``run_lab`` (``diag lab``) compares the OOD factors across schemes.

Example:
    >>> from lminf_diag.lab import scheme_names
    >>> scheme_names()
    ['lab-rope', 'lab-alibi', 'lab-partial', 'lab-nope']
"""

from lminf_diag.lab.specs import LAB_SPECS, LabSpec, TrainSettings, lab_names, lab_spec, scheme_names

__all__ = ["LAB_SPECS", "LabSpec", "TrainSettings", "lab_names", "lab_spec", "scheme_names"]
