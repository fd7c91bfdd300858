"""Routing a model through the kernel: the LM-Infinite patch and its undo."""

from ..attention.method_spec import MethodSpec, method_names
from .api import current_spec, lm_infinite, patch, through_kernel, unpatch
from .methods import current_method, method

__all__ = ["lm_infinite", "patch", "unpatch", "current_spec", "through_kernel", "method", "current_method",
           "MethodSpec", "method_names"]
