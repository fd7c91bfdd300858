"""Catch non-finite attention outputs and logits, located by layer and position.

Past the training length a model in half precision can overflow in attention (the failure the
LM-Infinite paper reports for Llama-2 in fp16): one inf logit makes a softmax row NaN, and from
there every later layer and every query that attends the poisoned key turns NaN. A loss of NaN
says nothing about where it started. `FiniteGuard` puts one forward hook on each attention
module (no change to the kernel) and, at the first call whose output holds a NaN or an inf,
raises (or records) "non-finite attention output in layer L at positions i..j (dtype)", the
positions being true token positions (`offset` + row). `check_logits` does the same for the
row statistics of a capture (max logit, log-sum-exp).

Example:
    >>> import torch
    >>> where = locate_nonfinite(torch.tensor([[[0.0], [float("nan")], [1.0], [float("inf")]]]))
    >>> where
    (1, 3)
    >>> nonfinite_message("attention output", 2, where, torch.float16, offset=100)
    'non-finite attention output in layer 2 at positions 101..103 (float16)'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lminf_diag.errors import NumericalError


def locate_nonfinite(x: torch.Tensor) -> tuple[int, int] | None:
    """(first, last) row index along dim 1 of a (B, N, ...) tensor holding a NaN/inf; None if finite."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    rows = bad.reshape(x.shape[0], x.shape[1], -1).any(-1).any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1])


def nonfinite_message(what: str, layer: int, where: tuple[int, int], dtype, offset: int = 0) -> str:
    """The one message format: 'non-finite <what> in layer L at positions i..j (dtype)'."""
    name = str(dtype).removeprefix("torch.")
    return f"non-finite {what} in layer {layer} at positions {where[0] + offset}..{where[1] + offset} ({name})"


def _attention_modules(model) -> list:
    mods = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    return sorted(mods, key=lambda m: m.layer_idx)


@dataclass
class FiniteGuard:
    """Forward hooks on every attention module that check its output for NaN/inf.

    `offset`: the true position of row 0 of the next call (set it before each chunk of a stream).
    `raise_error=True` raises `NumericalError` at the first non-finite output (the earliest layer,
    since layers run in order); otherwise messages accumulate in `events`.

    Example:
        >>> with FiniteGuard(model) as guard:                 # doctest: +SKIP
        ...     model(ids)
        NumericalError: non-finite attention output in layer 3 at positions 4096..8191 (float16)
    """

    model: object
    raise_error: bool = True
    offset: int = 0
    events: list[str] = field(default_factory=list)
    _hooks: list = field(default_factory=list, repr=False)

    def __enter__(self) -> FiniteGuard:
        for module in _attention_modules(self.model):
            self._hooks.append(module.register_forward_hook(self._check))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _check(self, module, args, output) -> None:
        out = output[0] if isinstance(output, tuple) else output
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return
        where = locate_nonfinite(out)
        if where is None:
            return
        msg = nonfinite_message("attention output", int(module.layer_idx), where, out.dtype, self.offset)
        if self.raise_error:
            raise NumericalError(
                msg + ". The attention overflowed or a NaN entered here: run in float32 or bfloat16 "
                "instead of float16, or check the weights of this layer."
            )
        self.events.append(msg)


def check_logits(max_logit: np.ndarray, lse: np.ndarray, layers, positions: np.ndarray, dtype,
                 offset: int = 0) -> str | None:
    """The message for the first layer whose recorded max logit or log-sum-exp is NaN/inf, or None.

    max_logit, lse: (L, H, M) row statistics of a capture; positions (M,) their rows.

    >>> m = np.zeros((2, 1, 3)); m[1, 0, 2] = np.inf
    >>> check_logits(m, np.zeros_like(m), [0, 1], np.array([0, 5, 9]), "float32", offset=10)
    'non-finite attention logits in layer 1 at positions 19..19 (float32)'
    """
    bad = ~(np.isfinite(max_logit) & np.isfinite(lse))  # (L, H, M)
    for i, layer in enumerate(layers):
        rows = np.nonzero(bad[i].any(0))[0]
        if rows.size:
            where = (int(positions[rows[0]]), int(positions[rows[-1]]))
            return nonfinite_message("attention logits", int(layer), where, dtype, offset)
    return None


__all__ = ["FiniteGuard", "check_logits", "locate_nonfinite", "nonfinite_message"]
