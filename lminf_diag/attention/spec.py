"""What each query attends to, and at which distance: the LM-Infinite settings as data.

`LambdaSpec` is the user-facing setting (mode, n_global, n_local, limit). `Plan` is what the
kernel executes for one layer: a local window at true distances, a set of far "global" keys,
and whether those far keys are seen at the capped distance `limit`.

    query i attends key j <= i when  i - j < n_local            (true distance)
                               or    j < n_global (far keys)   (distance `limit` if capped)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InvalidArgumentError

MODES = ("lambda", "mask_only", "cap_only", "window")
MODE_HELP = {
    "lambda": "Λ-mask + distance cap (the LM-Infinite method)",
    "mask_only": "Λ-mask, far global keys at their true distances",
    "cap_only": "every key attended, keys beyond the window seen at distance `limit`",
    "window": "local window only, no global tokens",
}


@dataclass(frozen=True)
class Plan:
    """Kernel-level attention pattern for one layer.

    n_local:  window size (keys at distance < n_local are local); None = no window (all keys local).
    n_global: keys j < n_global beyond the window are attended ("far" keys); None = every key.
    cap:      far keys are seen at distance `limit` instead of their true distance.
    """

    n_local: int | None = None
    n_global: int | None = 0
    cap: bool = False
    limit: int = 0

    @property
    def is_full(self) -> bool:
        """True when this is ordinary causal attention."""
        return self.n_local is None


FULL = Plan()


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}.")
    return value


@dataclass(frozen=True)
class LambdaSpec:
    """LM-Infinite settings, resolved (no None left).

    Example:
        >>> spec = LambdaSpec.resolve(train_len=8192, n_global=10)
        >>> spec.n_local, spec.limit, spec.mode
        (8192, 8192, 'lambda')
    """

    n_global: int
    n_local: int
    limit: int
    mode: str = "lambda"

    @classmethod
    def resolve(
        cls,
        train_len: int,
        n_global: int = 10,
        n_local: int | None = None,
        limit: int | None = None,
        mode: str = "lambda",
    ) -> LambdaSpec:
        """Fill defaults (n_local = training length, limit = n_local) and validate."""
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
        n_global = _check_int("n_global", n_global, 0)
        n_local = _check_int("n_local", train_len if n_local is None else n_local, 1)
        limit = _check_int("limit", n_local if limit is None else limit, 1)
        return cls(n_global=n_global, n_local=n_local, limit=limit, mode=mode)

    def plan(self) -> Plan:
        """The kernel pattern this mode stands for."""
        if self.mode == "lambda":
            return Plan(self.n_local, self.n_global, True, self.limit)
        if self.mode == "mask_only":
            return Plan(self.n_local, self.n_global, False, self.limit)
        if self.mode == "cap_only":
            return Plan(self.n_local, None, True, self.limit)
        return Plan(self.n_local, 0, False, self.limit)  # window

    def to_dict(self) -> dict:
        return asdict(self)
