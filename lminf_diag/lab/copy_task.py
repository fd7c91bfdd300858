"""A task that needs context at distance d: does the model copy a random string seen d tokens back?

"Fluent" (the loss stays near its in-range level) does not say that a model *uses* far context:
a trigram-level model is fluent at any length. The copy task separates the two. Each trial puts
a random string S of `length` lowercase letters into held-out text, and puts it again `distance`
tokens later (the second copy starts exactly d tokens after the first, so every token of it sits
at distance d from its twin). Its control is the same sequence with a *fresh* random string F in
the first place. Layout (one trial; P = `prefix` bytes of text, BOS first):

    [BOS] text[o : o+P]  S'  text[o+P : o+P+d-L]  S        S' = S (repeat) or F (control)
          ^ 1            ^ a = 1 + P               ^ b = a + d

The **copy gain** of a trial is the control's mean loss over the second S (without its first
letter: nothing says a copy starts there) minus the repeat's over the same tokens: the scored
tokens are identical, at the same position, in the same text, so the only difference is whether
S was seen d tokens back. A gain near ln 26 = 3.26 nats is a perfect copy; about 0 means no use of the string at
distance d. Trials are independent (seeded strings and text offsets), so the gain is an
`Estimate` over trials.

Example:
    >>> rep, ctl, where = copy_sequences(b"abcdefghij" * 20, distance=16, length=4, prefix=3, seed=0)
    >>> a, b = where
    >>> (a, b), rep[a : a + 4] == rep[b : b + 4], ctl[a : a + 4] != rep[a : a + 4], ctl[a + 4 :] == rep[a + 4 :]
    ((4, 20), True, True, True)
    >>> copy_gain(np.r_[np.zeros(20), np.full(4, 0.5)], np.r_[np.zeros(20), np.full(4, 3.0)], 20, 4)
    2.5
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError

LETTERS = string.ascii_lowercase.encode()
BOS = 256  # the lab tokenizer's begin-of-text id


def copy_sequences(
    text: bytes, *, distance: int, length: int, prefix: int, seed: int, offset: int | None = None
) -> tuple[list[int], list[int], tuple[int, int]]:
    """(repeat ids, control ids, (a, b)): one trial's two sequences and where the copies start.

    `text`: the held-out bytes; `seed` picks the strings (and the text offset unless given).
    """
    if length < 2 or distance < length or prefix < 0:
        raise InvalidArgumentError(
            f"copy task: length={length} (>= 2), distance={distance} (>= length), prefix={prefix} (>= 0)"
        )
    need = prefix + distance - length
    if len(text) < need + 1:
        raise InvalidArgumentError(
            f"copy task: the text ({len(text)} bytes) is shorter than {need + 1} bytes"
        )
    rng = np.random.default_rng(seed)
    first = [int(x) for x in rng.choice(list(LETTERS), size=length)]
    fresh = [int(x) for x in rng.choice(list(LETTERS), size=length)]
    if offset is None:
        offset = int(rng.integers(0, len(text) - need))
    body = text[offset : offset + need]
    head, gap = list(body[:prefix]), list(body[prefix:])
    a = 1 + prefix
    rep = [BOS, *head, *first, *gap, *first]
    ctl = [BOS, *head, *fresh, *gap, *first]
    return rep, ctl, (a, a + distance)


def copy_gain(nll_repeat: np.ndarray, nll_control: np.ndarray, start: int, length: int) -> float:
    """Control minus repeat: mean NLL over positions start+1 .. start+length-1 (the second copy
    without its first token), nats per token. See the module docstring."""
    sl = slice(start + 1, start + length)
    return float(
        np.mean(np.asarray(nll_control, np.float64)[sl]) - np.mean(np.asarray(nll_repeat, np.float64)[sl])
    )


def batch_nll(model: Any, ids: Any) -> np.ndarray:
    """(B, N) per-token NLL of a batch of equal-length sequences (column 0 NaN), float64."""
    import torch

    with torch.no_grad():
        logits = model(ids).logits.float()  # (B, N, V)
        lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, N - 1)
    out = np.full(tuple(ids.shape), np.nan)
    out[:, 1:] = -lp.double().numpy()
    return out


@dataclass
class CopyCell:
    """One model's copy task: gains per label, (D, trials), at `distances` tokens."""

    model: str
    scheme: str
    train_len: int
    n_local: int
    distances: list[int]
    gain: dict[str, np.ndarray]  # label -> (D, K) control minus repeat, nats per token
    first_copy: dict[str, np.ndarray] = field(default_factory=dict)  # label -> (D, K) loss on S's first place
    length: int = 16  # letters per string

    def estimates(self, margin: float) -> list[tuple[Any, str, int]]:
        """[(Estimate of the gain at d over trials, its decision against `margin`, d)] per label and d."""
        from lminf_diag.analyze.estimate import decide, estimate

        out = []
        for lab, g in self.gain.items():
            for i, d in enumerate(self.distances):
                e = estimate(
                    g[i],
                    figure=f"copy gain at d={d} ({d / self.train_len:.3g}T)",
                    label=f"{self.model}:{lab}",
                    unit="nats per token",
                    null="a fresh random string at the same place",
                )
                out.append((e, decide(e, margin), d))
        return out


def run_copy_task(
    model: Any,
    name: str,
    scheme: str,
    train_len: int,
    text: bytes,
    *,
    distances: list[int],
    trials: int,
    length: int = 16,
    prefix: int = 32,
    n_global: int = 10,
    seed: int = 0,
) -> CopyCell:
    """Every trial at every distance, baseline and LM-Infinite (n_local = T), batched per distance."""
    import torch

    from lminf_diag.attention.method_spec import MethodSettings
    from lminf_diag.patch import lm_infinite, through_kernel

    lam = MethodSettings(n_global=n_global, n_local=train_len)

    gains = {"baseline": np.zeros((len(distances), trials)), "lambda": np.zeros((len(distances), trials))}
    first = {k: np.zeros_like(v) for k, v in gains.items()}
    for i, d in enumerate(distances):
        rows, where = [], []
        for t in range(trials):
            rep, ctl, ab = copy_sequences(
                text, distance=d, length=length, prefix=prefix, seed=seed * 100_003 + t
            )
            rows += [rep, ctl]
            where.append(ab)
        ids = torch.tensor(rows, dtype=torch.long)  # (2K, N): repeat, control, repeat, ...
        with through_kernel(model):  # bounded memory for eager ALiBi too
            runs = {"baseline": batch_nll(model, ids)}
            with lm_infinite(model, **lam.kwargs()):
                runs["lambda"] = batch_nll(model, ids)
        for lab, nll in runs.items():
            for t, (a, b) in enumerate(where):
                gains[lab][i, t] = copy_gain(nll[2 * t], nll[2 * t + 1], b, length)
                first[lab][i, t] = float(np.mean(nll[2 * t, a + 1 : a + length]))
    return CopyCell(name, scheme, train_len, train_len, list(distances), gains, first, length)


__all__ = ["CopyCell", "batch_nll", "copy_gain", "copy_sequences", "run_copy_task"]
