"""Snapshots of a bounded KV cache: written to disk and read back exactly, so a long read (a
stream, a chunked capture) resumes where it stopped. Only tensors and plain values are stored
(`torch.load(weights_only=True)`: loading runs no code).

Example:
    >>> import tempfile
    >>> from transformers import DynamicCache
    >>> from lminf_diag.patch.cache import LambdaLayer
    >>> cache = DynamicCache(); cache.layers = [LambdaLayer(2, 3)]
    >>> _ = cache.layers[0].update(torch.ones(1, 1, 7, 4), torch.ones(1, 1, 7, 4))
    >>> path = tempfile.mkdtemp() + "/cache.pt"
    >>> save_snapshot(path, cache, torch.zeros(1, 8), done=7, extra={"nll": torch.ones(3)})
    >>> back, hidden, done, extra = load_snapshot(path, extra=True)
    >>> back.layers[0].positions.tolist(), back.get_seq_length(), done, extra["nll"].shape
    ([0, 1, 4, 5, 6], 7, 7, torch.Size([3]))
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from lminf_diag.errors import InvalidArgumentError, RunDirectoryError
from lminf_diag.util.atomic import atomic_write

_PLAIN = (int, float, bool, str, type(None))


def layer_state(layer: Any) -> dict:
    tensors, plain, dtypes, devices = {}, {}, {}, {}
    for name, value in vars(layer).items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu()
        elif isinstance(value, torch.dtype):
            dtypes[name] = str(value).removeprefix("torch.")
        elif isinstance(value, torch.device):
            devices[name] = str(value)
        elif isinstance(value, _PLAIN):
            plain[name] = value
        else:
            raise InvalidArgumentError(
                f"cannot snapshot the KV cache layer {type(layer).__name__}: its attribute {name!r} is a "
                f"{type(value).__name__}. Stream without a folder (not resumable) or with a method whose "
                "cache holds tensors and plain values only."
            )
    cls = type(layer)
    return {"cls": f"{cls.__module__}:{cls.__qualname__}", "tensors": tensors, "plain": plain, "dtypes": dtypes,
            "devices": devices}


def restore_layer(state: dict, device: torch.device | str | None) -> Any:
    module, _, qualname = state["cls"].partition(":")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    layer = cls.__new__(cls)
    for name, value in state["tensors"].items():
        setattr(layer, name, value.to(device) if device is not None else value)
    for name, value in state["plain"].items():
        setattr(layer, name, value)
    for name, value in state["dtypes"].items():
        setattr(layer, name, getattr(torch, value))
    for name, value in state["devices"].items():
        setattr(layer, name, torch.device(device if device is not None else value))
    return layer


def save_snapshot(path: str | os.PathLike[str], cache: Any, hidden: torch.Tensor | None, done: int,
                  extra: dict | None = None) -> None:
    """Write the cache's layers, the last hidden state (1, D), `done` and `extra` (tensors and plain
    values only), atomically."""
    payload = {"done": int(done), "layers": [layer_state(layer) for layer in cache.layers],
               "hidden": None if hidden is None else hidden.detach().cpu(), "extra": extra or {}}
    atomic_write(path, lambda f: torch.save(payload, f))


def load_snapshot(path: str | os.PathLike[str], device: torch.device | str | None = None, *, extra: bool = False):
    """(cache, hidden (1, D) or None, done) from `save_snapshot`'s file (tensors only: no code runs);
    with `extra=True`, (cache, hidden, done, extra)."""
    from transformers import DynamicCache

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise RunDirectoryError(f"{path}: unreadable cache snapshot ({err}); pass --overwrite to start afresh.") from err
    cache = DynamicCache()
    cache.layers = [restore_layer(s, device) for s in payload["layers"]]
    cache.layer_class_to_replicate = None
    hidden = payload["hidden"]
    hidden = None if hidden is None else hidden.to(device) if device is not None else hidden
    if extra:
        return cache, hidden, payload["done"], payload.get("extra", {})
    return cache, hidden, payload["done"]


__all__ = ["layer_state", "load_snapshot", "restore_layer", "save_snapshot"]
