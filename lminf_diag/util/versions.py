"""Version stamps: the library versions and the git commit that a run, a trace or a summary records.

Example:
    >>> stamp = versions(("numpy",))
    >>> sorted(stamp)
    ['numpy', 'python']
"""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

RUN_PACKAGES = ("lminf_diag", "torch", "transformers", "numpy", "pandas", "plotly", "scikit-learn", "scipy")
TRACE_PACKAGES = ("lminf_diag", "torch", "transformers", "numpy")  # what one forward pass depends on


def versions(packages: Iterable[str] = RUN_PACKAGES, python: bool = True) -> dict[str, str]:
    """Installed versions of `packages` (and of Python when `python`), without importing them.

    A package that is not installed is left out, unless it is already imported and has a
    ``__version__`` (a source checkout used without installing it).

    >>> versions(("numpy",), python=False) == {"numpy": __import__("numpy").__version__}
    True
    >>> versions(("no-such-package",), python=False)
    {}
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            module = sys.modules.get(name.replace("-", "_"))
            if getattr(module, "__version__", None):
                out[name] = str(module.__version__)
    return out


def git_hash() -> str | None:
    """The commit of the lminf_diag source tree (``+dirty`` if modified), or None; never raises.

    >>> git_hash() is None or len(git_hash()) >= 7
    True
    """

    def git(*args: str) -> str:
        cwd = Path(__file__).resolve().parent
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return f"{head}+dirty" if head and dirty else head or None


__all__ = ["RUN_PACKAGES", "TRACE_PACKAGES", "git_hash", "versions"]
