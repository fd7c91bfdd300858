"""The docstring examples of every lminf_diag module run as tests (one test per module).

Examples that need a real model or minutes carry ``# doctest: +SKIP``; the rest run here, offline.
A module that cannot be imported because an optional dependency is missing is skipped.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lminf_diag

OPTIONAL = ("ray",)  # optional extras: modules needing them are skipped when absent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = ["lminf_diag"]
    for info in pkgutil.walk_packages(lminf_diag.__path__, "lminf_diag."):
        if ".lab.weights" not in info.name:
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        if getattr(e, "name", None) in OPTIONAL:
            pytest.skip(f"{name} needs {e.name}")
        raise
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    if not tests:
        pytest.skip("no examples")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
