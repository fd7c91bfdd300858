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

from .capture.compare import auto_stride, compare, compare_windows, run_trace  # noqa: E402
from .capture.comparison import Comparison  # noqa: E402
from .capture.nll import token_nll  # noqa: E402
from .capture.recorder import capture  # noqa: E402
from .capture.trace import Trace, TraceMeta  # noqa: E402
from .capture.windows import Replicate, plan_windows  # noqa: E402
from .models import load_model, model_info  # noqa: E402
from .lab import registry as _lab_registry  # noqa: E402,F401  (the lab registers its lab-* names)
from .patch import current_spec, lm_infinite, patch, unpatch  # noqa: E402


def __getattr__(name):  # the analyzers pull in scikit-learn and scipy: import them on first use
    if name == "analyze":
        import importlib

        return importlib.import_module(".analyze", __name__)
    raise AttributeError(f"module 'lminf_diag' has no attribute {name!r}")


__all__ = [
    "analyze",
    "capture",
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
    "patch",
    "unpatch",
    "current_spec",
]
