"""Hidden-state hooks: keep the residual stream of chosen layers at chosen positions, in float16.

Index convention (as transformers' `hidden_states`): 0 = the embeddings (input of the first
decoder layer), i = the output of decoder layer i (1-based).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgumentError


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (the longest ModuleList in the base model)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise InvalidArgumentError(f"cannot find the decoder layers of {type(model).__name__}.")
    return max(lists, key=len)


class HiddenHooks:
    """Context manager storing hidden states (K, M, D) of `indices` at `positions` (M,).

    Example:
        >>> with HiddenHooks(model, [0, 2], positions) as hooks:   # doctest: +SKIP
        ...     model(ids)
        >>> hooks.states.shape                                      # doctest: +SKIP
        (2, len(positions), hidden_size)
    """

    def __init__(self, model: torch.nn.Module, indices: Sequence[int], positions: np.ndarray | None = None,
                 stride: int = 1, offset: int = 0, total: int | None = None):
        self.layers = decoder_layers(model)
        n = len(self.layers)
        bad = [i for i in indices if not 0 <= int(i) <= n]
        if bad:
            raise InvalidArgumentError(f"hidden_layers {bad} out of range: this model has hidden states 0..{n}.")
        self.indices = [int(i) for i in indices]
        self.stride = stride
        self.offset = int(offset)  # the forward's first token sits at this position (after a cached prefix)
        self.total = total  # the window's length when it is read in chunks (None: this forward's end)
        self.positions = None if positions is None else np.asarray(positions, dtype=np.int64)
        self.states: np.ndarray | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _store(self, slot: int, tensor: torch.Tensor) -> None:
        h = tensor[0] if tensor.dim() == 3 else tensor  # (N', D), batch size 1, positions offset..
        off = self.offset
        if self.states is None:
            n = self.total or h.shape[0] + off
            if self.positions is None:  # the first 64 positions, then every stride-th
                self.positions = np.union1d(np.arange(min(n, 64)), np.arange(0, n, self.stride))
            self.positions = self.positions[self.positions < n]
            self.states = np.zeros((len(self.indices), len(self.positions), h.shape[-1]), dtype=np.float16)
        keep = (self.positions >= off) & (self.positions < h.shape[0] + off)
        slots = np.nonzero(keep)[0]
        pos = torch.as_tensor(self.positions[keep] - off, device=h.device)
        self.states[slot, slots] = h[pos].detach().float().cpu().numpy().astype(np.float16)

    def __enter__(self) -> HiddenHooks:
        for slot, idx in enumerate(self.indices):
            if idx == 0:
                def pre(mod: torch.nn.Module, args: tuple, kwargs: dict[str, Any], slot: int = slot) -> None:
                    x = args[0] if args else kwargs["hidden_states"]
                    self._store(slot, x)

                self._handles.append(self.layers[0].register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(mod: torch.nn.Module, args: tuple, out: Any, slot: int = slot) -> None:
                    self._store(slot, out[0] if isinstance(out, tuple) else out)

                self._handles.append(self.layers[idx - 1].register_forward_hook(post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class LayerProgress:
    """Context manager calling `progress(layers done, layers in all, "layers")` as each decoder layer of a
    single forward pass finishes: progress within one long pass.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
    ...                   num_attention_heads=2, num_key_value_heads=2)
    >>> model, seen = LlamaForCausalLM(cfg).eval(), []
    >>> with torch.no_grad(), LayerProgress(model, lambda done, total, unit: seen.append((done, total))):
    ...     _ = model(torch.arange(8)[None])
    >>> seen
    [(1, 3), (2, 3), (3, 3)]
    """

    def __init__(self, model: torch.nn.Module, progress: Any) -> None:
        self.layers, self.progress = decoder_layers(model), progress
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerProgress:
        if self.progress is not None:
            total = len(self.layers)
            for i, layer in enumerate(self.layers):
                self._handles.append(layer.register_forward_hook(
                    lambda *_, done=i + 1: self.progress(done, total, "layers")))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
