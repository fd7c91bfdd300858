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


_REGISTERED: list[FamilySpec] = []  # rows added at run time by register_family (unchecked)


def register_family(
    model_type: str,
    position: str,
    route: str = "interface",
    rotary_module: str | None = "model.rotary_emb",
    train_len_keys: tuple[str, ...] = _MPE,
    note: str = "",
) -> FamilySpec:
    """Add (or replace) a row for an unlisted relative-position architecture; returns it.

    The fields are those of the table (see the module docstring). Nothing about the model is
    checked: a wrong `position` or `route` gives wrong results silently, so a warning says so.
    For a model built like a listed family, ``load_model(..., assume_family="llama")`` (CLI
    ``--assume-family llama``) copies that family's row instead.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     spec = register_family("my_llama", "rope", note="a Llama with another name")
        >>> family_of("my_llama").rotary_module
        'model.rotary_emb'
        >>> unregister_family("my_llama")
    """
    import warnings

    from lminf_diag.errors import InvalidArgumentError

    if position not in POSITION_KINDS or position == "absolute":
        accepted = ", ".join(k for k in POSITION_KINDS if k != "absolute")
        raise InvalidArgumentError(
            f"position {position!r} cannot be registered; LM-Infinite needs relative positions: {accepted}."
        )
    if route not in ("interface", "module"):
        raise InvalidArgumentError(f"route {route!r} is not accepted; use 'interface' or 'module'.")
    if route == "module" and position != "alibi":
        raise InvalidArgumentError("route 'module' exists for the ALiBi families (MPT, Bloom) only.")
    listed = next((f for f in _FAMILIES if f.model_type == model_type), None)
    if listed is not None:
        raise InvalidArgumentError(f"model type {model_type!r} is already listed; it cannot be re-registered.")
    spec = FamilySpec(model_type, position, route, rotary_module, tuple(train_len_keys), note or "registered")
    unregister_family(model_type)
    _REGISTERED.append(spec)
    _BY_TYPE[model_type] = spec
    warnings.warn(
        f"model type {model_type!r} registered as {position} via the attention {route} (unchecked): "
        "lminf_diag has not verified how this architecture encodes positions; compare a short run "
        "under the patch with the plain model before trusting results.",
        UserWarning,
        stacklevel=2,
    )
    return spec


def alias_family(model_type: str, like: str) -> FamilySpec:
    """Register `model_type` with the row of the listed family `like` (``--assume-family``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     alias_family("llama_copy", "llama").position
        'rope'
        >>> unregister_family("llama_copy")
    """
    from lminf_diag.errors import InvalidArgumentError

    base = _BY_TYPE.get(like)
    if base is None or not base.supported:
        raise InvalidArgumentError(
            f"--assume-family {like!r} is not a supported listed family; use one of: "
            f"{', '.join(f.model_type for f in supported_families())}."
        )
    return register_family(
        model_type, base.position, base.route, base.rotary_module, base.train_len_keys,
        f"assumed to be built like {like} (unchecked)",
    )


def unregister_family(model_type: str) -> None:
    """Remove a row added by `register_family` (listed rows stay)."""
    for spec in [s for s in _REGISTERED if s.model_type == model_type]:
        _REGISTERED.remove(spec)
        _BY_TYPE.pop(model_type, None)


def supported_families() -> list[FamilySpec]:
    """The families LM-Infinite can be applied to (relative positions), in table order.

    Example:
        >>> from lminf_diag.models import supported_families
        >>> "llama" in [f.model_type for f in supported_families()]
        True
    """
    return [spec for spec in (*_FAMILIES, *_REGISTERED) if spec.supported]


def known_families() -> list[FamilySpec]:
    """Every row of the table, including the unsupported absolute-position families."""
    return [*_FAMILIES, *_REGISTERED]


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
            f"attention route have not been checked. Supported families: {_supported_listing()}. If it is "
            "built like one of them, load it with assume_family=NAME (CLI --assume-family NAME), or add "
            "a row with lminf_diag.register_family (both unchecked)."
        )
    if not spec.supported:
        raise UnsupportedModelError(
            f"Model type '{model_type}' uses absolute position embeddings ({spec.note}); LM-Infinite needs "
            f"relative positions (RoPE or ALiBi), so it cannot be applied. "
            f"Supported families: {_supported_listing()}."
        )
    return spec
