"""Zero-shot RoPE scaling through transformers' own rope parameters, and its exact undo.

transformers reads `config.rope_parameters` once, when a rotary module is built; changing the
dict on a loaded model does nothing. So the scaled parameters are put in the config and every
rotary module is rebuilt from it (`type(module)(config)`, transformers' `ROPE_INIT_FUNCTIONS`
compute the frequencies); the undo puts the very same dict object and module objects back, so the
model computes bitwise what it computed before.

Example:
    >>> model, tok = load_model("smollm2-135m")                                  # doctest: +SKIP
    >>> undo = apply_rope_scaling(model, RopeScaling("yarn", 2.0, 8192), "yarn")  # doctest: +SKIP
    >>> undo.restore()                                                            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..attention.method_spec import ROPE_METHODS, RopeScaling
from ..errors import InvalidArgumentError, UnsupportedModelError
from ..models.families import family_of

SCALABLE_POSITIONS = ("rope", "rope_partial")


@dataclass
class RopeUndo:
    """What `apply_rope_scaling` replaced: the config's dict and the rotary modules."""

    config: Any
    params: Any
    modules: list[tuple[torch.nn.Module, str, torch.nn.Module]] = field(default_factory=list)

    def restore(self) -> None:
        """Put the original dict and modules back (idempotent)."""
        self.config.rope_parameters = self.params
        for parent, attr, old in self.modules:
            setattr(parent, attr, old)


def refusal(model: Any, method: str) -> str | None:
    """Why RoPE scaling `method` cannot apply to `model` (None when it can).

    >>> import transformers as tf
    >>> print(refusal(tf.MptConfig(d_model=32, n_heads=4, n_layers=1), "yarn"))   # doctest: +ELLIPSIS
    method 'yarn' rescales RoPE, but the mpt family encodes positions with alibi...
    """
    config = getattr(model, "config", model)
    fam = family_of(config)
    accepted = "baseline, lambda, mask_only, cap_only, window, topk, streaming"
    if fam.position not in SCALABLE_POSITIONS:
        why = {"alibi": "alibi (a linear bias per head, no rotary table)",
               "rope_interleaved": "rope_interleaved (a fixed sinusoid table without rope_parameters)"}
        return (f"method {method!r} rescales RoPE, but the {fam.model_type} family encodes positions with "
                f"{why.get(fam.position, fam.position)}. Accepted for {fam.model_type}: {accepted}.")
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or "rope_type" not in params:
        return (f"method {method!r} rescales RoPE, but the {fam.model_type} family keeps rope parameters per "
                f"layer type ({sorted(params) if isinstance(params, dict) else params!r}), which is not "
                f"supported. Accepted for {fam.model_type}: {accepted}.")
    if params.get("rope_type", "default") != "default":
        return (f"method {method!r} rescales RoPE, but this {fam.model_type} model already uses "
                f"{params['rope_type']!r} RoPE scaling. Use an attention method ({accepted}) or "
                f"a model whose rope_type is 'default'.")
    return None


def apply_rope_scaling(model: torch.nn.Module, scaling: RopeScaling, method: str) -> RopeUndo:
    """Scale the model's RoPE zero-shot with transformers' own `scaling.rope_type`; returns the undo."""
    if scaling.rope_type not in ROPE_METHODS:
        raise InvalidArgumentError(f"rope_type must be one of {', '.join(ROPE_METHODS)}; got {scaling.rope_type!r}.")
    why = refusal(model, method)
    if why:
        raise UnsupportedModelError(why)
    config = model.config
    undo = RopeUndo(config, config.rope_parameters)
    rotaries = [(name, mod) for name, mod in model.named_modules() if name.endswith("rotary_emb")]
    if not rotaries:
        raise UnsupportedModelError(f"method {method!r}: no rotary_emb module found in this "
                                    f"{config.model_type} model, so its RoPE cannot be rescaled.")
    try:
        config.rope_parameters = scaling.parameters(config.rope_parameters)
        config.validate_rope()
        for name, old in rotaries:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            buf = next(iter(old.buffers()), None)
            new = type(old)(config)
            if buf is not None:
                new = new.to(buf.device)
            setattr(parent, attr, new)
            undo.modules.append((parent, attr, old))
    except Exception as exc:
        undo.restore()
        if isinstance(exc, (InvalidArgumentError, UnsupportedModelError)):
            raise
        raise UnsupportedModelError(
            f"method {method!r}: transformers could not build the {scaling.rope_type} rotary table for this "
            f"{config.model_type} model ({type(exc).__name__}: {exc})."
        ) from exc
    return undo
