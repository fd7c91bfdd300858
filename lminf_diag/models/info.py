"""``model_info``: the shape, position scheme and training length of a loaded model, in one record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.models.embedded import METADATA_FILE, read_metadata
from lminf_diag.models.families import FamilySpec, find_family
from lminf_diag.models.loader import model_name

_BLOOM_DEFAULT_TRAIN_LEN = 2048


@dataclass(frozen=True)
class ModelInfo:
    """What the diagnostics need to know about a model.

    ``position`` is the family's kind refined by the config: a "rope" model whose
    ``partial_rotary_factor`` is below 1 reads "rope_partial"; one with no rotary dims at all
    (GPT-NeoX with ``rotary_pct=0``) reads "none", position only through the causal mask.
    ``rotary_dim`` is None for ALiBi and absolute positions; ``devices`` is the sorted set of
    parameter devices.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> info = model_info(LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2,
        ...     num_attention_heads=4, intermediate_size=128, vocab_size=300)))
        >>> info.head_dim, info.train_len, info.train_len_source
        (16, 2048, 'config:max_position_embeddings')
    """

    name: str
    model_type: str
    position: str
    route: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dim: int | None
    rope_theta: float | None
    hidden_size: int
    vocab_size: int
    train_len: int | None
    train_len_source: str
    dtype: str
    devices: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``devices`` as a list).

        Example:
            >>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
            >>> model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=64, num_hidden_layers=1,
            ...     num_attention_heads=4, intermediate_size=128, vocab_size=300))
            >>> model_info(model).to_dict()["rotary_dim"]
            4
        """
        data = asdict(self)
        data["devices"] = list(self.devices)
        return data

    def __str__(self) -> str:
        rows = self.to_dict()
        rows["devices"] = ", ".join(self.devices)
        width = max(len(k) for k in rows)
        return "\n".join(
            f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in rows.items()
        )


def _text_config(model_or_config: Any) -> Any:
    config = getattr(model_or_config, "config", model_or_config)
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _rope_parameters(config: Any) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return {}
    if "rope_theta" not in params and isinstance(params.get("full_attention"), dict):
        return params["full_attention"]  # per-layer-type parameters (Gemma 3): the global layers
    return params


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _rotary(config: Any, spec: FamilySpec | None, head_dim: int) -> tuple[str, int | None, float | None]:
    """Refined position kind, rotary_dim and rope_theta."""
    position = spec.position if spec is not None else "unknown"
    if position in ("alibi", "absolute", "unknown"):
        return position, None, None
    params = _rope_parameters(config)
    theta = params.get("rope_theta", _first(config, "rope_theta", "rotary_emb_base"))
    if position == "rope_interleaved":  # GPT-J: rotary_dim None means the whole head
        rotary_dim = int(getattr(config, "rotary_dim", None) or head_dim)
        return position, min(rotary_dim, head_dim), float(theta) if theta is not None else 10000.0
    factor = params.get("partial_rotary_factor", _first(config, "partial_rotary_factor", "rotary_pct"))
    rotary_dim = int(head_dim * float(factor)) if factor is not None else head_dim
    position = "none" if rotary_dim == 0 else "rope_partial" if rotary_dim < head_dim else "rope"
    return position, rotary_dim, float(theta) if theta is not None else None


def _train_len(model: Any, config: Any, spec: FamilySpec | None) -> tuple[int | None, str]:
    top = getattr(model, "config", config)
    for folder in (getattr(top, "_name_or_path", None), getattr(model, "name_or_path", None)):
        meta = read_metadata(folder)
        if meta and isinstance(meta.get("train_len"), int) and meta["train_len"] > 0:
            return meta["train_len"], METADATA_FILE
    keys = spec.train_len_keys if spec is not None else ("max_position_embeddings",)
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value, f"config:{key}"
    if spec is not None and spec.model_type == "bloom":
        return _BLOOM_DEFAULT_TRAIN_LEN, f"default:{_BLOOM_DEFAULT_TRAIN_LEN}"
    return None, "unknown"


def _check_override(train_len: Any) -> int:
    if isinstance(train_len, bool) or not isinstance(train_len, int) or train_len <= 0:
        raise InvalidArgumentError(f"train_len must be a positive integer (tokens), got {train_len!r}.")
    return train_len


def model_info(model: Any, train_len: int | None = None) -> ModelInfo:
    """Describe a loaded causal LM; ``train_len`` overrides the training length found in its files.

    The training length comes from, in order: the override; ``lminf_diag.json`` saved next to
    converted embedded/GGUF models; the family's config keys (``max_position_embeddings``,
    ``max_seq_len`` for MPT); 2048 for Bloom, whose config has no such field.

    Example:
        >>> from lminf_diag.models import load_model, model_info
        >>> model, _ = load_model("smollm2-135m")  # doctest: +SKIP
        >>> print(model_info(model))  # doctest: +SKIP
        name              smollm2-135m
        model_type        llama
        ...
    """
    override = _check_override(train_len) if train_len is not None else None
    config = _text_config(model)
    spec = find_family(getattr(model, "config", config))
    n_heads = int(_first(config, "num_attention_heads", "n_head", "n_heads"))
    hidden_size = int(_first(config, "hidden_size", "d_model", "n_embd"))
    head_dim = int(getattr(config, "head_dim", None) or hidden_size // n_heads)
    n_kv_heads = int(_first(config, "num_key_value_heads") or n_heads)
    position, rotary_dim, theta = _rotary(config, spec, head_dim)
    if override is not None:
        length, source = override, "override"
    else:
        length, source = _train_len(model, config, spec)
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    dtype = str(getattr(model, "dtype", params[0].dtype if params else "")).removeprefix("torch.")
    devices = tuple(sorted({str(p.device) for p in params}))
    return ModelInfo(
        name=model_name(model),
        model_type=str(getattr(config, "model_type", "")) if spec is None else spec.model_type,
        position=position,
        route=spec.route if spec is not None else "none",
        n_layers=int(_first(config, "num_hidden_layers", "n_layer", "n_layers")),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        rotary_dim=rotary_dim,
        rope_theta=theta,
        hidden_size=hidden_size,
        vocab_size=int(config.vocab_size),
        train_len=length,
        train_len_source=source,
        dtype=dtype,
        devices=devices,
    )
