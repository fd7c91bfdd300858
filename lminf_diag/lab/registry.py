"""The lab registers its models (``lab-rope``, ``lab-alibi``, ``lab-partial``, ``lab-nope`` and
their other seeds) as embedded names: importing this module (the package does) adds them.

Their weights ship inside the package (``lminf_diag/lab/weights/<name>/``, a few MB each), so
``load_model("lab-rope")`` needs no conversion and no network. See ``lminf_diag.lab`` for how
they were trained and ``diag lab`` for what they show.

Example:
    >>> lab_folder("lab-rope").name
    'lab-rope'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from lminf_diag.errors import ModelNotFoundError
from lminf_diag.lab.specs import LAB_SPECS, TrainSettings
from lminf_diag.models.embedded import register_embedded

REQUIRED = ("config.json", "model.safetensors", "lminf_diag.json", "tokenizer.json")


def lab_folder(name: str) -> Path:
    """Where the shipped weights of a lab model live (the folder may be missing in a broken install)."""
    return Path(str(files("lminf_diag.lab") / "weights" / name))


def lab_available(name: str) -> bool:
    """True when the lab model's folder is complete."""
    return all((lab_folder(name) / f).is_file() for f in REQUIRED)


def _builder(name: str):
    def build() -> Path:
        if not lab_available(name):
            raise ModelNotFoundError(
                f"The lab model {name!r} is not in this installation ({lab_folder(name)} is missing or "
                f"incomplete). Re-create it with: python -m lminf_diag.lab.train --out "
                f"{lab_folder(name).parent} --only {name}"
            )
        return lab_folder(name)

    return build


for _spec in LAB_SPECS:
    register_embedded(
        _spec.name,
        f"lab model: {_spec.description}; seed {_spec.seed}; bytes, 0.8 M parameters, trained here at "
        f"{TrainSettings.train_len} tokens",
        _builder(_spec.name),
        shipped=True,
    )
