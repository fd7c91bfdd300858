"""What each query attends to, and at which distance: the LM-Infinite settings as data.

`LambdaSpec` is the user-facing setting (mode, n_global, n_local, limit). `Plan` is what the
kernel executes for one layer: a local window at true distances, a set of far "global" keys,
and whether those far keys are seen at the capped distance `limit`.

    query i attends key j <= i when  i - j < n_local            (true distance)
                               or    j < n_global (far keys)   (distance `limit` if capped)

The optional "top-k middle tokens" variant (`top_k > 0`, as in later versions of the LM-Infinite
reference code, used for passkey retrieval): the LAST query row of a call (the row that yields
the next token), in layers >= `top_k_from_layer`, also attends, per query head, to the `top_k`
highest-scoring "middle" keys (neither local nor far), all seen at one distance
`top_k_distance` (default n_local // 2). See `attention/middle.py`.

Mode "streaming" (StreamingLLM, Xiao et al. 2023): the cache holds the n_global first tokens
(sinks) and the n_local most recent ones, and positions are assigned by cache slot. A query at
position i then sees its window at true distances and sink k at distance
min(i, n_global + n_local - 1) - k (`Plan.slots`; `limit` is n_global + n_local - 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InvalidArgumentError

MODES = ("lambda", "mask_only", "cap_only", "window", "streaming")
MODE_HELP = {
    "lambda": "Λ-mask + distance cap (the LM-Infinite method)",
    "mask_only": "Λ-mask, far global keys at their true distances",
    "cap_only": "every key attended, keys beyond the window seen at distance `limit`",
    "window": "local window only, no global tokens",
    "streaming": "StreamingLLM: n_global sink tokens + n_local recent ones, positions by cache slot",
}


@dataclass(frozen=True)
class Plan:
    """Kernel-level attention pattern for one layer.

    n_local:  window size (keys at distance < n_local are local); None = no window (all keys local).
    n_global: keys j < n_global beyond the window are attended ("far" keys); None = every key.
    cap:      far keys are seen at distance `limit` instead of their true distance.
    top_k:    the last query row also attends its top_k best "middle" keys (0 = off).
    top_k_distance: the distance at which those middle keys are seen (and scored).
    slots:    (with cap) far key j is seen at distance min(i, limit) - j instead of `limit`: the
              cache-slot positions of StreamingLLM (query moved to min(i, limit), keys unmoved).
    """

    n_local: int | None = None
    n_global: int | None = 0
    cap: bool = False
    limit: int = 0
    top_k: int = 0
    top_k_distance: int = 0
    slots: bool = False

    @property
    def is_full(self) -> bool:
        """True when this is ordinary causal attention."""
        return self.n_local is None


FULL = Plan()


def _check_int(name: str, value, minimum: int, why: str = "") -> int:
    why = f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}{why}, got {value!r}.")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}{why}, got {value}.")
    return value


@dataclass(frozen=True)
class LambdaSpec:
    """LM-Infinite settings, resolved (no None left).

    top_k > 0 turns on the "top-k middle tokens" variant in layers >= top_k_from_layer (see the
    module docstring); top_k_distance=None means n_local // 2.

    Example:
        >>> spec = LambdaSpec.resolve(train_len=8192, n_global=10)
        >>> spec.n_local, spec.limit, spec.mode, spec.top_k
        (8192, 8192, 'lambda', 0)
        >>> spec = LambdaSpec.resolve(train_len=4096, top_k=5)
        >>> spec.top_k_distance, spec.plan(layer=3).top_k, spec.plan(layer=4).top_k
        (2048, 0, 5)
    """

    n_global: int
    n_local: int
    limit: int
    mode: str = "lambda"
    top_k: int = 0
    top_k_from_layer: int = 4
    top_k_distance: int | None = None

    def __post_init__(self):
        if self.top_k_distance is None:  # constructed directly: resolve the default like `resolve`
            object.__setattr__(self, "top_k_distance", self.n_local // 2)

    @classmethod
    def resolve(
        cls,
        train_len: int,
        n_global: int = 10,
        n_local: int | None = None,
        limit: int | None = None,
        mode: str = "lambda",
        *,
        top_k: int = 0,
        top_k_from_layer: int = 4,
        top_k_distance: int | None = None,
    ) -> LambdaSpec:
        """Fill defaults (n_local = training length, limit = n_local, top_k_distance = n_local // 2)
        and validate."""
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
        n_global = _check_int("n_global", n_global, 0)
        n_local = _check_int("n_local", train_len if n_local is None else n_local, 1)
        if mode == "streaming":
            if limit is not None and limit != n_global + n_local - 1:
                raise InvalidArgumentError(
                    f"streaming sees its sinks at their cache-slot distances, so it takes no limit (got "
                    f"{limit}); leave limit unset (it is n_global + n_local - 1 = {n_global + n_local - 1})."
                )
            if top_k:
                raise InvalidArgumentError("streaming has no top-k middle tokens: use top_k=0 with it.")
            limit = max(1, n_global + n_local - 1)  # n_global = 0: no far key, the limit is unused
        limit = _check_int("limit", n_local if limit is None else limit, 1)
        top_k = _check_int("top_k", top_k, 0, "middle keys added per head of the last row; 0 = off")
        top_k_from_layer = _check_int("top_k_from_layer", top_k_from_layer, 0,
                                      "index of the first layer that uses top_k")
        if top_k_distance is None:
            top_k_distance = n_local // 2
        top_k_distance = _check_int("top_k_distance", top_k_distance, 0,
                                    "distance at which the middle keys are seen; None = n_local // 2")
        return cls(n_global=n_global, n_local=n_local, limit=limit, mode=mode, top_k=top_k,
                   top_k_from_layer=top_k_from_layer, top_k_distance=top_k_distance)

    def plan(self, layer: int | None = None) -> Plan:
        """The kernel pattern this mode stands for in layer `layer` (index from 0).

        The plan carries top_k only for layers >= top_k_from_layer (layer=None: no top-k), and
        never for "cap_only", where every key is already attended (there is no middle).
        """
        top_k = self.top_k if layer is not None and layer >= self.top_k_from_layer else 0
        extra = {"top_k": top_k, "top_k_distance": self.top_k_distance} if top_k else {}
        if self.mode == "lambda":
            return Plan(self.n_local, self.n_global, True, self.limit, **extra)
        if self.mode == "mask_only":
            return Plan(self.n_local, self.n_global, False, self.limit, **extra)
        if self.mode == "cap_only":
            return Plan(self.n_local, None, True, self.limit)
        if self.mode == "streaming":
            return Plan(self.n_local, self.n_global, True, self.limit, slots=True)
        return Plan(self.n_local, 0, False, self.limit, **extra)  # window: the middle is all beyond it

    def to_dict(self) -> dict:
        return asdict(self)
