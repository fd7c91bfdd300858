"""The model families the toolkit knows, as one table of data.

Each row says how a family encodes positions and how its attention can be replaced:

- ``position``: ``"rope"`` (rotary on the whole head), ``"rope_partial"`` (rotary on the first
  ``rotary_dim`` channels, rotate-half layout), ``"rope_interleaved"`` (GPT-J: rotary on the first
  ``rotary_dim`` channels, pairs interleaved, rotate-every-two), ``"alibi"`` (linear bias per head),
  ``"absolute"`` (learned or sinusoidal position embeddings added to the input).
- ``route``: ``"interface"`` when attention is dispatched through transformers'
  ``ALL_ATTENTION_FUNCTIONS`` (so ``AttentionInterface.register`` + ``set_attn_implementation``
  works), ``"module"`` when each attention module's ``forward`` must be replaced, ``"none"`` when
  LM-Infinite cannot apply (absolute positions).

Checked against transformers 5.24 source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lminf_diag.errors import UnsupportedModelError

POSITION_KINDS = ("rope", "rope_partial", "rope_interleaved", "alibi", "absolute")
ROUTES = ("interface", "module", "none")


@dataclass(frozen=True)
class FamilySpec:
    """How one ``model_type`` encodes positions and where its attention can be replaced.

    Example:
        >>> from lminf_diag.models import family_of
        >>> spec = family_of("gpt_neox")
        >>> spec.position, spec.route, spec.rotary_module
        ('rope_partial', 'interface', 'gpt_neox.rotary_emb')
    """

    model_type: str
    position: str
    route: str
    rotary_module: str | None
    train_len_keys: tuple[str, ...]
    note: str = ""

    @property
    def supported(self) -> bool:
        """True when LM-Infinite can be applied (relative positions and a known route)."""
        return self.route != "none"


_MPE = ("max_position_embeddings",)

_FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("llama", "rope", "interface", "model.rotary_emb", _MPE, "Llama 1/2/3, SmolLM, TinyLlama"),
    FamilySpec("mistral", "rope", "interface", "model.rotary_emb", _MPE, "config.sliding_window may be set"),
    FamilySpec("qwen2", "rope", "interface", "model.rotary_emb", _MPE, "Qwen2 / Qwen2.5"),
    FamilySpec("qwen3", "rope", "interface", "model.rotary_emb", _MPE, "q/k RMSNorm before RoPE"),
    FamilySpec("gemma", "rope", "interface", "model.rotary_emb", _MPE, "head_dim 256 on larger sizes"),
    FamilySpec(
        "gemma2", "rope", "interface", "model.rotary_emb", _MPE, "alternating sliding/global layers; no SDPA"
    ),
    FamilySpec(
        "gemma3_text",
        "rope",
        "interface",
        "model.rotary_emb",
        _MPE,
        "sliding/global layers with separate rope_theta per layer type",
    ),
    FamilySpec(
        "gemma3",
        "rope",
        "interface",
        "model.language_model.rotary_emb",
        _MPE,
        "multimodal wrapper; the text settings live in config.text_config",
    ),
    FamilySpec("phi", "rope_partial", "interface", "model.rotary_emb", _MPE, "partial_rotary_factor 0.5"),
    FamilySpec(
        "phi3", "rope", "interface", "model.rotary_emb", _MPE, "partial rotary when partial_rotary_factor < 1"
    ),
    FamilySpec(
        "gpt_neox",
        "rope_partial",
        "interface",
        "gpt_neox.rotary_emb",
        _MPE,
        "Pythia; rotary_pct 0.25 by default",
    ),
    FamilySpec(
        "gptj",
        "rope_interleaved",
        "interface",
        "transformer.rotary_emb",
        ("n_positions", "max_position_embeddings"),
        "rotate-every-two on rotary_dim channels; sin/cos table stops at n_positions",
    ),
    FamilySpec(
        "starcoder2", "rope", "interface", "model.rotary_emb", _MPE, "config.sliding_window may be set"
    ),
    FamilySpec("olmo2", "rope", "interface", "model.rotary_emb", _MPE, "q/k RMSNorm before RoPE"),
    FamilySpec(
        "mpt", "alibi", "module", None, ("max_seq_len",), "ALiBi bias; attention not routed via interface"
    ),
    FamilySpec("bloom", "alibi", "module", None, (), "ALiBi bias; no training length in config (2048)"),
    FamilySpec("gpt2", "absolute", "none", None, ("n_positions",), "learned absolute positions"),
    FamilySpec("opt", "absolute", "none", None, _MPE, "learned absolute positions"),
    FamilySpec("gpt_neo", "absolute", "none", None, _MPE, "learned absolute positions"),
    FamilySpec("gpt_bigcode", "absolute", "none", None, ("n_positions",), "learned absolute positions"),
)

_BY_TYPE: dict[str, FamilySpec] = {spec.model_type: spec for spec in _FAMILIES}


def supported_families() -> list[FamilySpec]:
    """The families LM-Infinite can be applied to (relative positions), in table order.

    Example:
        >>> from lminf_diag.models import supported_families
        >>> "llama" in [f.model_type for f in supported_families()]
        True
    """
    return [spec for spec in _FAMILIES if spec.supported]


def known_families() -> list[FamilySpec]:
    """Every row of the table, including the unsupported absolute-position families."""
    return list(_FAMILIES)


def _supported_listing() -> str:
    return ", ".join(f"{s.model_type} ({s.position})" for s in supported_families())


def _model_type_of(model_or_config: Any) -> str:
    if isinstance(model_or_config, str):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise UnsupportedModelError(
            f"Cannot tell the architecture of {type(model_or_config).__name__}: it has no config.model_type. "
            f"Pass a Hugging Face model or config. Supported families: {_supported_listing()}."
        )
    return str(model_type)


def find_family(model_or_config: Any) -> FamilySpec | None:
    """The table row for a model, config or ``model_type`` string, or None; never raises.

    Unlike :func:`family_of` this also returns the unsupported absolute-position rows.

    Example:
        >>> find_family("gpt2").position
        'absolute'
        >>> find_family("not-a-model") is None
        True
    """
    try:
        return _BY_TYPE.get(_model_type_of(model_or_config))
    except UnsupportedModelError:
        return None


def family_of(model_or_config: Any) -> FamilySpec:
    """The :class:`FamilySpec` of a model, a config, or a ``model_type`` string.

    Raises :class:`~lminf_diag.errors.UnsupportedModelError` for absolute-position families
    and unknown architectures; the message lists the supported families.

    Example:
        >>> from transformers import LlamaConfig
        >>> family_of(LlamaConfig()).position
        'rope'
        >>> family_of("gpt2")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        lminf_diag.errors.UnsupportedModelError: ...
    """
    model_type = _model_type_of(model_or_config)
    spec = _BY_TYPE.get(model_type)
    if spec is None:
        raise UnsupportedModelError(
            f"Model type '{model_type}' is an unknown architecture for lminf_diag: its position encoding and "
            f"attention route have not been checked. Supported families: {_supported_listing()}."
        )
    if not spec.supported:
        raise UnsupportedModelError(
            f"Model type '{model_type}' uses absolute position embeddings ({spec.note}); LM-Infinite needs "
            f"relative positions (RoPE or ALiBi), so it cannot be applied. "
            f"Supported families: {_supported_listing()}."
        )
    return spec
