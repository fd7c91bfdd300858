"""Loading the model of an evaluation verb: seeded, with --train-len applied.

Example:
    >>> from lminf_diag.cli.loading import load
    >>> import argparse
    >>> load(argparse.Namespace(model="lab-rope", seed=0, train_len=None, n_local=None, dtype="float32",
    ...                         device=None, revision=None, token=None, device_map=None))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import timed


def load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model, tokenizer, ModelInfo) with --train-len applied; refuses an unknown training length."""
    from lminf_diag.errors import InvalidArgumentError
    from lminf_diag.models import load_model, model_info

    with timed("loading model", sys.stderr):
        options.seed_everything(args.seed)
        model, tok = load_model(args.model, **options.load_kwargs(args))
    info = model_info(model, train_len=args.train_len)
    if info.train_len is None and args.n_local is None:
        raise InvalidArgumentError(
            f"The training length of {args.model} is unknown (no max_position_embeddings or similar in its "
            "config); pass --train-len N, or --n-local N for the patch window."
        )
    return model, tok, info
