"""Where a model's modules compute, also when accelerate's ``device_map`` splits or offloads it.

A model loaded with ``device_map`` may keep some weights on "meta" between calls (offloaded to
CPU or disk and moved in by accelerate's hooks for each forward), and its first parameter need
not be where the inputs go. Inputs go to the input embedding's execution device; a module used
directly (the LM head applied chunk by chunk) runs on its own execution device.

Example:
    >>> import torch
    >>> execution_device(torch.nn.Linear(2, 2), torch.device("cpu")).type
    'cpu'
"""

from __future__ import annotations

from typing import Any


def execution_device(module: Any, default: Any) -> Any:
    """accelerate's execution device when the module is hooked, else its weight's device (if not
    "meta"), else `default` (a ``torch.device``)."""
    import torch  # here, not at import: the CLI's help must not load torch

    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return dev if isinstance(dev, torch.device) else torch.device(dev)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        return weight.device
    return default


def input_device(model: Any) -> Any:
    """Where input ids go: the input embedding's execution device (the first parameter's otherwise).

    >>> import torch
    >>> input_device(torch.nn.Embedding(4, 2)).type
    'cpu'
    """
    first = next(model.parameters()).device
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    return execution_device(emb, first) if emb is not None else first


__all__ = ["execution_device", "input_device"]
