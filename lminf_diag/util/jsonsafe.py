"""JSON-ready values: numpy scalars and arrays, tuples, sets and paths as plain Python.

`to_json_safe` is for results (NaN and inf become null, so strict JSON readers accept them);
`json_default` is the ``default=`` hook for files that keep NaN as written (trace metadata).

Example:
    >>> import json
    >>> import numpy as np
    >>> json.dumps(to_json_safe({"x": np.float32(0.5), "bad": float("inf"), "a": np.arange(2)}))
    '{"x": 0.5, "bad": null, "a": [0, 1]}'
    >>> json.dumps({"n": np.int64(3), "s": (1, 2)}, default=json_default)
    '{"n": 3, "s": [1, 2]}'
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def to_json_safe(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps(..., allow_nan=False)` accepts: NaN/inf become None,
    tuples and sets lists, numpy scalars and arrays plain Python, paths strings, keys strings.

    >>> to_json_safe({"a": float("nan"), "b": (1, 2)})
    {'a': None, 'b': [1, 2]}
    """
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return to_json_safe(tolist())
    return obj


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays, sets and tuples as plain Python.

    >>> json_default(object())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    TypeError: value of type object is not JSON serializable
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serializable")


__all__ = ["json_default", "to_json_safe"]
