"""Long-context methods as data: one `MethodSpec` per name, defaults defined once here.

A method is what the kernel's plan does (`attention`: a `LambdaSpec`, None = plain causal) plus,
optionally, a zero-shot RoPE scaling of the model's own rotary table (`rope`: a `RopeScaling`).

    name                         attention                         rope
    baseline                     -                                 -
    lambda, mask_only,           LM-Infinite and its ablations     -
    cap_only, window             (`attention/spec.py` MODES)
    topk                         lambda + top-k middle tokens      -
    streaming                    StreamingLLM sinks + window,      -
                                 positions by cache slot
    linear, dynamic, yarn,       -                                 transformers' rope_type
    llama3
    <attention>+<rope>           e.g. lambda+dynamic               both (the kernel re-rotates
                                                                   with the scaled table)

Example:
    >>> spec = MethodSpec.resolve("lambda+yarn", train_len=4096, target_len=16384)
    >>> spec.attention.mode, spec.attention.n_global, spec.rope.rope_type, spec.rope.factor
    ('lambda', 10, 'yarn', 4.0)
    >>> s = MethodSpec.resolve("streaming", train_len=4096)
    >>> s.attention.n_global, s.attention.n_local, s.attention.limit
    (4, 4092, 4095)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InvalidArgumentError
from .spec import FULL, LambdaSpec, Plan

DEFAULTS: dict[str, Any] = {
    "n_global": 10,  # LM-Infinite's global tokens (its reference code: 10 for generation, passkey)
    "streaming_n_global": 4,  # StreamingLLM's attention sinks (its start_size)
    "top_k": 5,  # the top-k variant of LM-Infinite's reference code
    "top_k_from_layer": 4,
    "low_freq_factor": 1.0,  # Llama 3.1's RoPE scaling constants
    "high_freq_factor": 4.0,
}
ATTENTION_SETTINGS = ("n_global", "n_local", "limit", "top_k", "top_k_from_layer", "top_k_distance")
ROPE_SETTINGS = ("factor", "target_len")

ATTENTION_METHODS = ("lambda", "mask_only", "cap_only", "window", "topk", "streaming")
ROPE_METHODS = ("linear", "dynamic", "yarn", "llama3")
COMBINABLE = ("lambda", "mask_only", "cap_only", "window", "topk")  # attention parts with a rope part
METHOD_HELP = {
    "baseline": "the model as it is",
    "lambda": "LM-Infinite: Λ-mask + distance cap (Han et al. 2023)",
    "mask_only": "Λ-mask, far global keys at their true distances (ablation)",
    "cap_only": "every key attended, far keys seen at distance `limit` (ablation)",
    "window": "local window only (ablation)",
    "topk": "LM-Infinite + the top-k middle tokens of the last row (its reference code's passkey option)",
    "streaming": "StreamingLLM: n_global sinks + n_local recent tokens, positions by cache slot (Xiao et al. 2023)",
    "linear": "position interpolation: RoPE positions divided by factor (Chen et al. 2023)",
    "dynamic": "dynamic NTK: RoPE base grown with the length past the training length",
    "yarn": "YaRN: per-frequency interpolation + attention temperature (Peng et al. 2023)",
    "llama3": "Llama 3 RoPE scaling: low frequencies divided by factor, smooth in between",
}


def method_names() -> list[str]:
    """Every accepted name: the single methods, then `<attention>+<rope>` combinations.

    >>> method_names()[:3], "lambda+dynamic" in method_names()
    (['baseline', 'lambda', 'mask_only'], True)
    """
    return ["baseline", *ATTENTION_METHODS, *ROPE_METHODS] + [f"{a}+{r}" for a in COMBINABLE for r in ROPE_METHODS]


def split_name(name: str) -> tuple[str | None, str | None]:
    """("lambda", "dynamic") for "lambda+dynamic"; (None, "yarn") for "yarn"; refuses unknown names."""
    if not isinstance(name, str) or name not in method_names():
        singles = ", ".join(["baseline", *ATTENTION_METHODS, *ROPE_METHODS])
        raise InvalidArgumentError(
            f"unknown method {name!r}. Accepted: {singles}, or <attention>+<rope> with attention in "
            f"{', '.join(COMBINABLE)} and rope in {', '.join(ROPE_METHODS)} (e.g. lambda+dynamic)."
        )
    if name == "baseline":
        return None, None
    if "+" in name:
        a, r = name.split("+")
        return a, r
    return (name, None) if name in ATTENTION_METHODS else (None, name)


@dataclass(frozen=True)
class RopeScaling:
    """A zero-shot RoPE scaling: transformers' `rope_type` with its `factor`.

    `parameters(base)` is the model's new `config.rope_parameters`: the old dict (rope_theta,
    partial_rotary_factor, ...) with the type, factor and what the type needs on top.

    >>> RopeScaling("llama3", 2.0, 8192).parameters({"rope_theta": 5e5, "rope_type": "default"})["low_freq_factor"]
    1.0
    """

    rope_type: str
    factor: float
    original_max_position_embeddings: int
    extra: dict[str, Any] = field(default_factory=dict)

    def parameters(self, base: dict) -> dict:
        params = {k: v for k, v in base.items() if k in ("rope_theta", "partial_rotary_factor")}
        params.update(rope_type=self.rope_type, factor=float(self.factor))
        if self.rope_type in ("yarn", "llama3"):
            params["original_max_position_embeddings"] = int(self.original_max_position_embeddings)
        if self.rope_type == "llama3":
            params.update(low_freq_factor=DEFAULTS["low_freq_factor"], high_freq_factor=DEFAULTS["high_freq_factor"])
        params.update(self.extra)
        return params


@dataclass(frozen=True)
class MethodSpec:
    """One long-context method, resolved: its name, kernel settings and RoPE scaling."""

    name: str
    attention: LambdaSpec | None = None
    rope: RopeScaling | None = None

    def plan(self, layer: int | None = None) -> Plan:
        """The kernel plan of `layer` (plain causal when the method leaves attention alone)."""
        return FULL if self.attention is None else self.attention.plan(layer)

    def to_dict(self) -> dict:
        """{"method", the attention settings (mode, n_global, ...), "rope": {...} or None}."""
        out: dict[str, Any] = {"method": self.name}
        if self.attention is not None:
            out.update(self.attention.to_dict())
        out["rope"] = None if self.rope is None else asdict(self.rope)
        return out

    @classmethod
    def from_lambda(cls, spec: LambdaSpec) -> MethodSpec:
        """The method an `lm_infinite` setting stands for."""
        name = "topk" if spec.top_k and spec.mode == "lambda" else spec.mode
        return cls(name, spec)

    @classmethod
    def resolve(cls, name: str, train_len: int | None, **settings: Any) -> MethodSpec:
        """Fill the defaults of method `name` and validate its settings.

        Attention settings: n_global, n_local, limit, top_k, top_k_from_layer, top_k_distance.
        RoPE settings: factor, or target_len (factor = target_len / train_len, at least 1).
        Defaults: n_global 10 (streaming: 4 sinks); n_local the training length (streaming: the
        training length minus the sinks, so cache slots stay within it); top_k 5 for "topk".
        """
        attn, rope = split_name(name)
        allowed = (ATTENTION_SETTINGS if attn else ()) + (ROPE_SETTINGS if rope else ())
        given = {k: v for k, v in settings.items() if v is not None}
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise InvalidArgumentError(
                f"method {name!r} takes no {', '.join(bad)}; it accepts "
                f"{', '.join(allowed) if allowed else 'no settings'}."
            )
        if (rope or (attn and "n_local" not in given)) and not train_len:
            raise InvalidArgumentError(
                f"method {name!r} needs the model's training length: pass train_len=N"
                + ("." if rope else " or n_local=N.")
            )
        return cls(name, _attention(attn, train_len, given) if attn else None,
                   _rope(name, rope, train_len, given) if rope else None)


def _attention(attn: str, train_len: int | None, given: dict) -> LambdaSpec:
    streaming = attn == "streaming"
    n_global = given.get("n_global", DEFAULTS["streaming_n_global"] if streaming else DEFAULTS["n_global"])
    n_local = given.get("n_local")
    if n_local is None and streaming:
        n_local = max(1, int(train_len) - int(n_global))
    top_k = given.get("top_k", DEFAULTS["top_k"] if attn == "topk" else 0)
    mode = "lambda" if attn == "topk" else attn
    return LambdaSpec.resolve(train_len or n_local, n_global=n_global, n_local=n_local, limit=given.get("limit"),
                              mode=mode, top_k=top_k,
                              top_k_from_layer=given.get("top_k_from_layer", DEFAULTS["top_k_from_layer"]),
                              top_k_distance=given.get("top_k_distance"))


def _rope(name: str, rope_type: str, train_len: int | None, given: dict) -> RopeScaling:
    factor, target = given.get("factor"), given.get("target_len")
    if factor is None:
        if target is None:
            raise InvalidArgumentError(
                f"method {name!r} needs factor= or target_len= (factor = target_len / training length)."
            )
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise InvalidArgumentError(f"target_len must be a positive number of tokens, got {target!r}.")
        factor = max(1.0, target / int(train_len))
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1.0:
        raise InvalidArgumentError(f"factor must be a number >= 1 (1 = no scaling), got {factor!r}.")
    return RopeScaling(rope_type, float(factor), int(train_len))


def as_method(value: str | MethodSpec | LambdaSpec, train_len: int | None = None, **settings: Any) -> MethodSpec:
    """A `MethodSpec` from a name (resolved with `settings`), a `LambdaSpec` or a `MethodSpec`."""
    if isinstance(value, MethodSpec):
        return value
    if isinstance(value, LambdaSpec):
        return MethodSpec.from_lambda(value)
    return MethodSpec.resolve(value, train_len, **settings)


@dataclass(frozen=True)
class MethodSettings:
    """The attention settings every run of an evaluation shares, as one value (defaults defined here).

    n_local / limit None: the training length (and n_local), resolved by each method; top_k 0 =
    off; top_k_distance None = n_local // 2. `kwargs()` is what `patch.methods.applied` and
    `lm_infinite` take; `patch()` the three LM-Infinite settings alone.

    >>> s = MethodSettings(n_global=4, n_local=64)
    >>> s.patch()
    {'n_global': 4, 'n_local': 64, 'limit': None}
    >>> MethodSettings().kwargs()["n_global"], MethodSettings(top_k=5).top()["top_k_from_layer"]
    (10, 4)
    >>> MethodSettings.merge(None, n_global=None, n_local=32) == MethodSettings(n_local=32)
    True
    """

    n_global: int = DEFAULTS["n_global"]
    n_local: int | None = None
    limit: int | None = None
    top_k: int = 0
    top_k_from_layer: int = DEFAULTS["top_k_from_layer"]
    top_k_distance: int | None = None

    def patch(self) -> dict[str, Any]:
        """{n_global, n_local, limit}: the LM-Infinite settings (as run folders record them)."""
        return {"n_global": self.n_global, "n_local": self.n_local, "limit": self.limit}

    def top(self) -> dict[str, Any]:
        """{top_k, top_k_from_layer, top_k_distance}: the top-k middle-tokens settings."""
        return {"top_k": self.top_k, "top_k_from_layer": self.top_k_from_layer, "top_k_distance": self.top_k_distance}

    def kwargs(self) -> dict[str, Any]:
        """Every setting as keyword arguments (`lm_infinite(model, **s.kwargs())`)."""
        return asdict(self)

    @classmethod
    def merge(cls, settings: MethodSettings | None = None, **legacy: Any) -> MethodSettings:
        """`settings`, or (the deprecated path) one built from loose keyword arguments: those given
        as None take the defaults above. Passing both is refused."""
        given = {k: v for k, v in legacy.items() if v is not None}
        unknown = set(given) - set(ATTENTION_SETTINGS)
        if unknown:
            raise InvalidArgumentError(f"unknown settings {sorted(unknown)}; accepted: {', '.join(ATTENTION_SETTINGS)}.")
        if settings is None:
            return cls(**given)
        if not isinstance(settings, MethodSettings):
            raise InvalidArgumentError(f"settings must be a MethodSettings, got {type(settings).__name__}.")
        if given:
            raise InvalidArgumentError(
                f"pass the attention settings once: settings=MethodSettings(...) or the keywords "
                f"{', '.join(sorted(given))}, not both."
            )
        return settings
