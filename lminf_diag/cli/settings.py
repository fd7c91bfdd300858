"""The settings of one analysis run, read once from the parsed arguments.

The argparse `Namespace` stays at the edge (the verbs' `run`); the capture pipeline and the shared
sections read this one typed value: the model and windows, the runs, the patch settings, what is
captured. `settings_of(args)` builds it on first use and keeps it on `args`, so every step of a
command sees the same object.

Example:
    >>> import argparse
    >>> ns = argparse.Namespace(model="lab-rope", text="carroll-alice", length=512, mode=["window"],
    ...                         n_local=64, stride="auto")
    >>> s = RunSettings.from_args(ns)
    >>> s.labels, s.windows, s.n_global, s.resolved_stride
    (('baseline', 'window'), 16, 10, 1)
    >>> s.patch("window", train_len=128)
    {'n_global': 10, 'n_local': 64, 'limit': None, 'mode': 'window'}
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from lminf_diag.cli import options

_CACHE = "_run_settings"
BASELINE_AUTO = 32768  # --baseline-length auto: the plain pass reads at most this many tokens of a window  # attribute of the Namespace holding the settings built from it


@dataclass(frozen=True)
class RunSettings:
    """What one analysis command runs: model, windows, runs, patch settings, capture settings.

    labels: the runs in order ("baseline" first unless --patched-only); modes: the --mode names
    given (empty when none); methods: the --method names. n_local / limit None: the training
    length. stride: "auto" or rows between captured rows (`resolved_stride` for the number).
    """

    model: str
    text: str | None = None
    windows: int = options.DEFAULT_WINDOWS_MODEL
    length: int | None = None
    repeat: bool = False
    labels: tuple[str, ...] = ("baseline", "lambda")
    modes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    n_global: int | None = 10
    n_local: int | None = None
    limit: int | None = None
    train_len: int | None = None
    stride: int | str = "auto"
    layers: Any = None  # list of layer indices, or None for every layer
    dtype: str | None = None
    device: str | None = None
    seed: int = 0
    rope_factor: float | None = None
    baseline_length: int | str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunSettings:
        """The settings of parsed arguments (options a verb does not have take the defaults above)."""

        def get(name: str, default: Any = None) -> Any:
            return getattr(args, name, default)

        return cls(
            model=str(get("model", "")),
            text=get("text"),
            windows=options.resolve_windows(args),
            length=get("length"),
            repeat=bool(get("repeat", False)),
            labels=tuple(options.labels(args)),
            modes=tuple(get("mode") or ()),
            methods=tuple(options.methods(args)),
            n_global=get("n_global", 10),
            n_local=get("n_local"),
            limit=get("limit"),
            train_len=get("train_len"),
            stride=get("stride", "auto"),
            layers=get("layers"),
            dtype=get("dtype"),
            device=get("device"),
            seed=get("seed", 0),
            rope_factor=get("rope_factor"),
            baseline_length=get("baseline_length", "auto") or "auto",
        )

    @property
    def resolved_stride(self) -> int:
        """The stride as a number of rows (`options.resolve_stride`)."""
        return options.resolve_stride(self.stride, self.length)

    @property
    def resolved_baseline_length(self) -> int | None:
        """Tokens of each window the baseline reads: --baseline-length, auto = the whole window up to
        `BASELINE_AUTO` tokens (None: the length is not known yet).

        >>> RunSettings("m", length=131072).resolved_baseline_length
        32768
        >>> RunSettings("m", length=16384, baseline_length=50000).resolved_baseline_length
        16384
        """
        if self.length is None:
            return None
        wanted = BASELINE_AUTO if self.baseline_length == "auto" else int(self.baseline_length)
        return min(int(self.length), wanted)

    @property
    def baseline_stops(self) -> bool:
        """True when the baseline reads less than the whole window."""
        return self.length is not None and "baseline" in self.labels and self.resolved_baseline_length < self.length

    def patch(self, mode: str, train_len: int | None) -> dict[str, Any]:
        """The `lm_infinite` keyword arguments of one mode (n_local defaults to the training length)."""
        return {"n_global": self.n_global, "n_local": self.n_local or train_len, "limit": self.limit, "mode": mode}


def settings_of(args: argparse.Namespace | RunSettings) -> RunSettings:
    """`args`' settings, built on first use and kept on `args` (a `RunSettings` is returned as is).

    >>> ns = argparse.Namespace(model="m", length=64)
    >>> settings_of(ns) is settings_of(ns)
    True
    """
    if isinstance(args, RunSettings):
        return args
    cached = getattr(args, _CACHE, None)
    if cached is None:
        cached = RunSettings.from_args(args)
        setattr(args, _CACHE, cached)
    return cached


__all__ = ["RunSettings", "settings_of"]
