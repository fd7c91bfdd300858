"""Progress lines for long steps, on stderr: step number, elapsed time and an estimate of what is left.

The estimate is the mean time of the steps finished in this run times the steps still to do.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> p = Progress(2, stream=out, clock=iter([0.0, 40.0, 40.0, 81.0]).__next__)
    >>> with p.step("baseline: forward over 16384 tokens"):
    ...     pass
    >>> with p.step("lambda: forward over 16384 tokens"):
    ...     pass
    >>> print(out.getvalue().strip())
    [1/2] baseline: forward over 16384 tokens ...
    [1/2] baseline: forward over 16384 tokens ... 40 s, about 40 s left
    [2/2] lambda: forward over 16384 tokens ... (about 40 s left)
    [2/2] lambda: forward over 16384 tokens ... 41 s, done
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO


def fmt_seconds(seconds: float) -> str:
    """Short human duration.

    >>> fmt_seconds(4.26), fmt_seconds(41), fmt_seconds(125), fmt_seconds(3725)
    ('4.3 s', '41 s', '2 min 5 s', '1 h 2 min')
    """
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass
class StepTiming:
    """What `Progress.step` yields; `seconds` is filled when the step ends. Call `update(done,
    total)` from inside the step (per chunk or per layer) for progress lines with an estimate of
    what is left. The rate is measured from the first update on, so one-time work before it (the
    compilation of the statistics kernel in the first layer or chunk) is not counted.

    >>> import io
    >>> out = io.StringIO()
    >>> t = StepTiming("lambda: forward", _print=lambda line: out.write(line + "\\n"),
    ...                _clock=iter([100.0, 130.0, 160.0, 161.0]).__next__, every=20.0)
    >>> for done in (1, 2, 3, 4):
    ...     t.update(done, 4, "chunks")
    >>> print(out.getvalue().strip())
    lambda: forward ... 2/4 chunks (50%), about 1 min 0 s left
    lambda: forward ... 3/4 chunks (75%), about 30 s left
    """

    name: str
    seconds: float = 0.0
    _print: Callable[[str], None] | None = None
    _clock: Callable[[], float] = time.perf_counter
    every: float = 15.0  # seconds between progress lines
    _first: tuple[float, int] | None = None
    _last: float = 0.0

    def update(self, done: int, total: int, unit: str = "") -> None:
        if self._print is None or total <= 0:
            return
        now = self._clock()
        if self._first is None:
            self._first, self._last = (now, done), now
            return
        if done >= total or now - self._last < self.every:
            return
        self._last = now
        t0, d0 = self._first
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
        left = f", about {fmt_seconds((total - done) / rate)} left" if rate > 0 else ""
        self._print(f"{self.name} ... {done}/{total}{' ' + unit if unit else ''} ({100 * done // total}%){left}")


class Progress:
    """Numbered steps with start and end lines; see the module docstring."""

    def __init__(
        self, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter
    ):
        self.total = max(int(total), 0)
        self.stream = stream
        self.clock = clock
        self.index = 0
        self.durations: list[float] = []

    def _print(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(line, file=stream, flush=True)

    def _left(self, remaining: int) -> str | None:
        if remaining <= 0 or not self.durations:
            return None
        return fmt_seconds(sum(self.durations) / len(self.durations) * remaining)

    def skip(self, name: str, why: str = "already done, skipped") -> None:
        """Count a step that needs no work (e.g. finished in an earlier run)."""
        self.index += 1
        self._print(f"[{self.index}/{self.total}] {name}: {why}")

    @contextmanager
    def step(self, name: str) -> Iterator[StepTiming]:
        """Time one step, printing a start line and an end line with the estimate of time left."""
        self.index += 1
        tag = f"[{self.index}/{self.total}] {name} ..."
        left = self._left(self.total - self.index + 1)
        self._print(f"{tag} (about {left} left)" if left else tag)
        timing = StepTiming(tag[:-4], _print=self._print, _clock=self.clock)
        start = self.clock()
        yield timing
        timing.seconds = self.clock() - start
        self.durations.append(timing.seconds)
        left = self._left(self.total - self.index)
        self._print(f"{tag} {fmt_seconds(timing.seconds)}, " + (f"about {left} left" if left else "done"))


@contextmanager
def timed(name: str, stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
    """One unnumbered timed step ("analysis ... 3.2 s").

    >>> import io
    >>> out = io.StringIO()
    >>> with timed("analysis", out, clock=iter([0.0, 3.2]).__next__):
    ...     pass
    >>> out.getvalue()
    'analysis ... 3.2 s\\n'
    """
    timing = StepTiming(name)
    start = clock()
    yield timing
    timing.seconds = clock() - start
    print(
        f"{name} ... {fmt_seconds(timing.seconds)}",
        file=stream if stream is not None else sys.stderr,
        flush=True,
    )


def short_window_warning(
    length: int, train_len: int | None, what: str = "window", option: str = "--length"
) -> str | None:
    """The warning line for a run that never goes past the training length, or None.

    >>> print(short_window_warning(2048, 8192))  # doctest: +NORMALIZE_WHITESPACE
    warning: the window (2048 tokens) does not exceed the training length (8192): nothing is out of
    distribution, so no breakdown can show. Use --length above 8192, a pretend training length
    (--train-len 1024 with --length 2048), or the quick path on a lab model trained at 128 tokens
    (--model lab-rope --length 512).
    >>> short_window_warning(16384, 8192) is None
    True
    """
    if not train_len or length > train_len:
        return None
    pretend = max(2, length // 2)
    return (
        f"warning: the {what} ({length} tokens) does not exceed the training length ({train_len}): nothing "
        f"is out of distribution, so no breakdown can show. Use {option} above {train_len}, a pretend "
        f"training length (--train-len {pretend} with {option} {length}), or the quick path on a lab model "
        f"trained at 128 tokens (--model lab-rope {option} 512)."
    )


def warn_short_window(
    length: int, train_len: int | None, what: str = "window", option: str = "--length", stream: TextIO | None = None
) -> None:
    """Print `short_window_warning` on stderr (before the run starts) when it applies."""
    line = short_window_warning(length, train_len, what, option)
    if line:
        print(line, file=stream or sys.stderr, flush=True)
