"""The one list syntax of every list-valued option: comma-separated, repeatable.

``--multiples 2,4,8``, ``--mode lambda,cap_only``, ``--docs carroll-alice,bryant-stories``; giving
the option again adds to the list (``--mode lambda --mode window``), repeats are dropped.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--lengths", action=CommaList, type=comma_list(int, "lengths"), default=[4096])
    >>> p.parse_args(["--lengths", "2048,4096"]).lengths
    [2048, 4096]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def comma_list(item: Callable[[str], Any], what: str, choices: tuple[str, ...] = ()) -> Callable[[str], list]:
    """An argparse `type` for comma-separated lists, the one list syntax of every option.

    Each part goes through `item` (e.g. int, float, a `bounded_int`); `choices` restricts the parts.

    >>> comma_list(int, "multiples of T")("2, 4,8")
    [2, 4, 8]
    >>> comma_list(str, "modes", ("lambda", "window"))("lambda,nope")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    argparse.ArgumentTypeError: invalid choice: 'nope' for modes (choose from lambda, window)
    """

    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, e.g. a,b; got {text!r}")
        out = []
        for part in parts:
            if choices and part not in choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {part!r} for {what} (choose from {', '.join(choices)})"
                )
            try:
                out.append(item(part))
            except (ValueError, argparse.ArgumentTypeError) as err:
                raise argparse.ArgumentTypeError(f"{what}: {part!r} is not accepted ({err})") from None
        return out

    return parse


class CommaList(argparse.Action):
    """``--opt a,b --opt c`` -> [a, b, c] (repeats dropped, order kept); the first use replaces the default.

    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--multiples", action=CommaList, type=comma_list(int, "multiples"), default=[8])
    >>> p.parse_args(["--multiples", "2,4", "--multiples", "4,16"]).multiples, p.parse_args([]).multiples
    ([2, 4, 16], [8])
    """

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        kept = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, list(dict.fromkeys([*kept, *values])))
