"""Fixtures shared by the test files.

- `tok`: the small in-memory BPE tokenizer of the tiny models (`tests.tiny.small_tokenizer`),
  built once per module; a test file may define its own `tok` (it then wins).
- `require_lab`: ``require_lab("lab-rope", ...)`` skips the test when those shipped lab weights
  are absent.

Helpers that take arguments (tiny models of each family, saved tiny model folders, synthetic
traces) live in `tests/tiny.py` and `lminf_diag.synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture(scope="module")
def tok():
    from tests.tiny import small_tokenizer

    return small_tokenizer()


@pytest.fixture(scope="session")
def require_lab() -> Callable[..., None]:
    from lminf_diag.lab.registry import lab_available

    def require(*names: str) -> None:
        missing = [n for n in names if not lab_available(n)]
        if missing:
            pytest.skip(f"lab weights not shipped: {', '.join(missing)}")

    return require
