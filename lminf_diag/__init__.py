"""lminf_diag: why language models break down past their training length, and what LM-Infinite does.

Example:
    >>> import lminf_diag as ld
    >>> model, tok = ld.load_model("smollm2-135m")                       # doctest: +SKIP
    >>> with ld.lm_infinite(model, n_global=10):                         # doctest: +SKIP
    ...     out = model.generate(ids, max_new_tokens=20)
    >>> cmp = ld.compare(model, tok, text, 16384)                        # doctest: +SKIP
    >>> ld.analyze.entropy_growth(cmp).summary()                         # doctest: +SKIP
"""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402
import types as _types  # noqa: E402

from .lab import registry as _lab_registry  # noqa: E402,F401  (the lab registers its lab-* names)

# Public names, imported on first use: `import lminf_diag` (and `diag --version`) stays free of
# torch, transformers, scikit-learn and scipy until something needs them.
_LAZY = {
    "auto_stride": ".capture.compare",
    "compare": ".capture.compare",
    "compare_windows": ".capture.compare",
    "run_trace": ".capture.compare",
    "Comparison": ".capture.comparison",
    "token_nll": ".capture.nll",
    "record": ".capture.recorder",
    "Trace": ".capture.trace",
    "TraceMeta": ".capture.trace",
    "Replicate": ".capture.windows",
    "plan_windows": ".capture.windows",
    "load_model": ".models",
    "model_info": ".models",
    "register_family": ".models",
    "current_spec": ".patch",
    "current_method": ".patch",
    "lm_infinite": ".patch",
    "method": ".patch",
    "MethodSpec": ".patch",
    "patch": ".patch",
    "unpatch": ".patch",
    "list_books": ".data",
    "load_text": ".data",
    "token_window": ".data",
    "run_lab": ".lab.run",
    "LabSettings": ".lab.run",
    "LabResult": ".lab.result",
}

_SUBPACKAGES = ("analyze", "capture", "evaluate")


def __getattr__(name):
    import importlib

    if name in _SUBPACKAGES:  # the analyzers pull in scikit-learn and scipy: imported on first use
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lminf_diag' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


class _Package(_types.ModuleType):
    """Keeps ``lminf_diag.patch`` the function once its subpackage loads.

    Importing a subpackage sets the parent's attribute of the same name to the subpackage; the
    eager imports used to rebind the name to the function right after, the lazy ones must not
    let the subpackage win. (``lminf_diag.capture`` is the subpackage; its context manager is
    ``lminf_diag.record``.)
    """

    def __setattr__(self, name, value):
        if name == "patch" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


__all__ = [
    "analyze",
    "capture",
    "record",
    "compare",
    "compare_windows",
    "auto_stride",
    "plan_windows",
    "token_nll",
    "Replicate",
    "run_trace",
    "Comparison",
    "Trace",
    "TraceMeta",
    "load_model",
    "model_info",
    "lm_infinite",
    "method",
    "MethodSpec",
    "current_method",
    "patch",
    "unpatch",
    "current_spec",
    "register_family",
    "evaluate",
    "list_books",
    "load_text",
    "token_window",
    "run_lab",
    "LabSettings",
    "LabResult",
]
