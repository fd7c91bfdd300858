"""A bounded KV cache for decoding under the patch: the first n_global and the last n_local
entries of each layer, with their true positions.

Under LM-Infinite a query never attends a key that is neither global (j < n_global) nor in the
window (i - j < n_local), so the entries in between can be dropped for good: memory per step
stays constant however long the text grows. Unlike StreamingLLM-style caches, positions are not
renumbered: `last_positions` tells the kernel where each returned key truly sits, so distances
inside the window stay true and global keys are capped at `limit` as without a cache.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class LambdaLayer(DynamicLayer):
    """One layer's cache: keeps positions < n_global and the last n_local positions.

    Example:
        >>> layer = LambdaLayer(n_global=2, n_local=3)
        >>> for _ in range(10):
        ...     _ = layer.update(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
        >>> layer.keys.shape[2], layer.positions.tolist(), layer.get_seq_length()
        (5, [0, 1, 7, 8, 9], 10)
    """

    is_sliding = False

    def __init__(self, n_global: int, n_local: int):
        super().__init__()
        self.n_global, self.n_local = n_global, n_local
        self.cumulative_length = 0
        self.positions = torch.zeros(0, dtype=torch.long)
        self.last_positions = self.positions  # positions of the states returned by the last update

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.positions = self.positions.to(key_states.device)
        n_new = key_states.shape[-2]
        new = torch.arange(self.cumulative_length, self.cumulative_length + n_new, device=key_states.device)
        g, w = self.n_global, self.n_local
        if n_new == 1 and self.positions.shape[0] == g + w:
            # full cache, one decoding step: drop the oldest window entry and append, one copy. The
            # new query (distance < w to its keys) needs exactly the global keys and the last w.
            self.keys = torch.cat([self.keys[:, :, :g], self.keys[:, :, g + 1 :], key_states], dim=-2)
            self.values = torch.cat([self.values[:, :, :g], self.values[:, :, g + 1 :], value_states], dim=-2)
            self.positions = torch.cat([self.positions[:g], self.positions[g + 1 :], new])
            self.cumulative_length += 1
            self.last_positions = self.positions
            return self.keys, self.values
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        pos = torch.cat([self.positions, new])
        self.cumulative_length += n_new
        self.last_positions = pos
        if pos.shape[0] > g + w:  # positions are ascending and the first g are 0..g-1
            self.keys = torch.cat([keys[:, :, :g], keys[:, :, -w:]], dim=-2)
            self.values = torch.cat([values[:, :, :g], values[:, :, -w:]], dim=-2)
            self.positions = torch.cat([pos[:g], pos[-w:]])
        else:
            self.keys, self.values, self.positions = keys, values, pos
        return keys, values

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (self.keys.shape[-2] if self.is_initialized else 0) + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:  # pragma: no cover - assisted decoding only
        raise NotImplementedError("the bounded LM-Infinite cache cannot be cropped")


def bound_cache(cache: Any, n_layers: int, n_global: int, n_local: int, keep_layers: Collection[int] = ()) -> bool:
    """Turn an empty transformers Cache into a bounded one in place; False if it is not possible.

    Layers in `keep_layers` (e.g. sliding-window layers with their own cache) are left as they are.
    """
    if not isinstance(cache, Cache) or cache.get_seq_length() != 0:
        return False
    layers = list(cache.layers)
    if any(getattr(layer, "is_initialized", False) for layer in layers):
        return False
    if not layers:
        layers = [DynamicLayer() for _ in range(n_layers)]
    for i, layer in enumerate(layers):
        if i not in keep_layers and type(layer) is DynamicLayer:
            layers[i] = LambdaLayer(n_global, n_local)
    cache.layers = layers
    cache.layer_class_to_replicate = None
    return True


def bounded_copy(cache: Any, n_global: int, n_local: int) -> Any:
    """A new bounded cache holding what the bounded cache keeps of `cache`'s entries (a full
    `DynamicCache` of a prefix, positions 0..P-1): a chunked patched run continues from it.

    >>> from transformers import DynamicCache
    >>> full = DynamicCache()
    >>> _ = full.update(torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4), 0)
    >>> small = bounded_copy(full, n_global=2, n_local=3)
    >>> small.layers[0].positions.tolist(), small.get_seq_length()
    ([0, 1, 3, 4, 5], 6)
    """
    from transformers import DynamicCache

    out = DynamicCache()
    layers = [LambdaLayer(n_global, n_local) for _ in cache.layers]
    for src, dst in zip(cache.layers, layers, strict=True):
        dst.update(src.keys, src.values)
    out.layers = layers
    out.layer_class_to_replicate = None
    return out


def key_positions(cache: Any, layer_idx: int | None, n_keys: int) -> torch.Tensor | None:
    """True positions of the keys a bounded cache layer returned, or None for other caches."""
    if cache is None or layer_idx is None or layer_idx >= len(getattr(cache, "layers", ())):
        return None
    layer = cache.layers[layer_idx]
    if isinstance(layer, LambdaLayer) and layer.last_positions.shape[0] == n_keys:
        return layer.last_positions
    return None
