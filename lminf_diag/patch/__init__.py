"""Routing a model through the kernel: the LM-Infinite patch and its undo."""

from .api import current_spec, lm_infinite, patch, through_kernel, unpatch

__all__ = ["lm_infinite", "patch", "unpatch", "current_spec", "through_kernel"]
