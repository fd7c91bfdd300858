"""The options the verbs share, defined once, and the helpers that read them.

Stride rule (``--stride auto``, the default): statistics are recorded for every query row when
the window has at most 1024 tokens, else for every (length // 256)-th row plus 64 log-spaced
rows, so a run keeps about 320 rows whatever its length (16384 tokens -> stride 64). Hidden
states keep the first 64 positions and every stride-th one.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_analysis_options(p)
    >>> args = p.parse_args(["--length", "16384", "--mode", "lambda", "--mode", "window"])
    >>> resolve_stride(args.stride, args.length), modes(args), labels(args)
    (64, ['lambda', 'window'], ['baseline', 'lambda', 'window'])
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from lminf_diag.attention.spec import MODE_HELP, MODES
from lminf_diag.cli.lists import CommaList, comma_list  # noqa: F401  (the one list syntax)
from lminf_diag.cli.method_options import add_method_options  # noqa: F401  (verbs call options.add_method_options)
from lminf_diag.data import default_text, list_books
from lminf_diag.models.embedded import DEFAULT_MODEL

DEFAULT_LENGTH = 12288  # 1.5x the embedded model's training length: 4 windows fit the 10-minute main job
DEFAULT_WINDOWS_MODEL = 4  # windows per run for a real model (each costs a forward pass per label)
DEFAULT_WINDOWS = 16  # for the lab models (a forward pass is milliseconds)


def bounded_int(minimum: int, explain: str = "") -> Callable[[str], int]:
    """An argparse `type` accepting whole numbers >= minimum; the error explains the option.

    >>> bounded_int(1, "the local window")("0")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be >= 1, got 0 (the local window)
    """

    def parse(text: str) -> int:
        why = f" ({explain})" if explain else ""
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}{why}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}{why}")
        return value

    return parse


def parse_layers(text: str) -> list[int] | None:
    """``"all"`` -> None (every layer); ``"0,5,10"`` -> [0, 5, 10].

    >>> parse_layers("0, 5,10"), parse_layers("all")
    ([0, 5, 10], None)
    """
    if text.strip().lower() == "all":
        return None
    try:
        layers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or comma-separated layer indices such as 0,5,10; got {text!r}"
        ) from None
    if not layers or layers[0] < 0:
        raise argparse.ArgumentTypeError(f"layer indices must be >= 0 (0 is the first layer); got {text!r}")
    return layers


def auto_or_int(minimum: int, explain: str) -> Callable[[str], int | str]:
    """An argparse `type`: ``"auto"`` or a whole number >= minimum (`bounded_int`'s errors)."""
    return lambda text: "auto" if text.strip().lower() == "auto" else bounded_int(minimum, explain)(text)


parse_stride = auto_or_int(1, "query-row stride, or 'auto'")
parse_baseline_length = auto_or_int(2, "baseline tokens, or 'auto'")  # tokens of each window the baseline reads


def resolve_stride(stride: int | str, length: int) -> int:
    """The stride `auto` stands for: 1 up to 1024 tokens, else length // 256.

    >>> resolve_stride("auto", 1024), resolve_stride("auto", 16384), resolve_stride(3, 16384)
    (1, 64, 3)
    """
    from lminf_diag.capture.compare import auto_stride

    return auto_stride(length) if stride == "auto" else int(stride)


def examples_epilog(*lines: str) -> str:
    """The ``Examples:`` section every --help ends with."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


def new_parser(subparsers: Any, name: str, summary: str, description: str, examples: list[str]):
    """A verb's parser with its description and Examples epilog, raw-formatted."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=examples_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --revision, --token, --dtype, --device, --device-map, --trust-remote-code, --allow-pickle,
    --assume-family, --train-len."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"embedded name, model folder, .gguf file or anything from_pretrained accepts (hub id org/name, "
        f"gpt2) (default {DEFAULT_MODEL}; see `diag models`)",
    )
    g.add_argument("--revision", default=None, help="hub revision: branch, tag or commit (default: main)")
    g.add_argument(
        "--token", default=None, help="hub token for private or gated models (default: HF_TOKEN or the saved login)"
    )
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default float32 on CPU)")
    g.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    g.add_argument(
        "--device-map",
        default=None,
        help="passed to from_pretrained as device_map, e.g. auto (needs accelerate); not with --device",
    )
    g.add_argument(
        "--assume-family",
        default=None,
        metavar="FAMILY",
        help="treat an unlisted model type as this listed family, e.g. llama (unchecked; see `diag models`)",
    )
    g.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model folder's own code to run"
    )
    g.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load weights stored only as pickles (.bin/.pt; they can run code when loaded)",
    )
    g.add_argument(
        "--train-len",
        type=bounded_int(1, "the model's training length in tokens"),
        default=None,
        help="override the training length read from the model's files",
    )


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `load_model` keyword arguments the model options ask for.

    >>> ns = argparse.Namespace(dtype=None, device=None, trust_remote_code=False, allow_pickle=False)
    >>> sorted(load_kwargs(ns))
    ['allow_pickle', 'assume_family', 'device', 'device_map', 'dtype', 'revision', 'token', 'trust_remote_code']
    """
    return {
        "dtype": args.dtype,
        "device": args.device,
        "device_map": getattr(args, "device_map", None),
        "revision": getattr(args, "revision", None),
        "token": getattr(args, "token", None),
        "trust_remote_code": args.trust_remote_code,
        "allow_pickle": args.allow_pickle,
        "assume_family": getattr(args, "assume_family", None),
    }


def add_text_options(p: argparse.ArgumentParser, min_length: int = 2) -> None:
    """--text, --length, --repeat."""
    g = p.add_argument_group("text")
    g.add_argument(
        "--text",
        default=default_text(),
        help=f"bundled book name ({', '.join(list_books())}; `diag books` lists them), all-books (every "
        f"book joined: ~257k tokens, for 128k windows) or path to a text file (default {default_text()})",
    )
    g.add_argument(
        "--length",
        type=bounded_int(min_length, "tokens in the window"),
        default=DEFAULT_LENGTH,
        help=f"tokens in the window (default {DEFAULT_LENGTH})",
    )
    g.add_argument(
        "--repeat", action="store_true", help="join copies of the text when it is shorter than --length"
    )
    g.add_argument(
        "--windows",
        type=bounded_int(1, "independent token windows; 4 or more give an interval between windows"),
        default=None,
        help=f"independent windows of --length tokens, each a replicate of every figure (default "
        f"{DEFAULT_WINDOWS} for the lab models, {DEFAULT_WINDOWS_MODEL} otherwise): the first from --text, "
        "then from the other bundled books in turn, then later offsets; for a text file, offsets of it",
    )


def add_patch_options(p: argparse.ArgumentParser) -> None:
    """--n-global, --n-local, --limit, --mode (repeatable), --baseline-only / --patched-only."""
    g = p.add_argument_group("LM-Infinite settings")
    g.add_argument(
        "--n-global",
        type=bounded_int(0, "tokens at the start that every query keeps attending to"),
        default=10,
        help="global tokens at the start that every query attends to (default 10)",
    )
    g.add_argument(
        "--n-local",
        type=bounded_int(
            1,
            "the local window is how many recent tokens each query attends to; 0 would leave a query "
            "nothing nearby to attend to; omit it to use the model's training length",
        ),
        default=None,
        help="local window in tokens (default: the training length)",
    )
    g.add_argument(
        "--limit",
        type=bounded_int(1, "the largest distance the patched model sees"),
        default=None,
        help="distance cap in tokens (default: --n-local)",
    )
    g.add_argument(
        "--mode",
        action=CommaList,
        type=comma_list(str, "patch modes", MODES),
        default=None,
        metavar="MODE[,MODE]",
        help="patch mode(s), comma-separated for ablations, e.g. lambda,cap_only (default lambda): "
        + "; ".join(f"{m}: {h}" for m, h in MODE_HELP.items()),
    )
    only = g.add_mutually_exclusive_group()
    only.add_argument("--baseline-only", action="store_true", help="run the unpatched model only")
    only.add_argument("--patched-only", action="store_true", help="run the patched mode(s) only")
    g.add_argument("--baseline-length", type=parse_baseline_length, default="auto", metavar="N|auto",
                   help="tokens of each window the baseline reads (default auto: the whole window up to 32768 "
                   "tokens; a plain pass costs O(n^2), so past that only the bounded methods read on)")


def add_capture_options(p: argparse.ArgumentParser) -> None:
    """--layers, --stride."""
    g = p.add_argument_group("capture")
    g.add_argument(
        "--layers", type=parse_layers, default=None, help="layers to record, e.g. 0,5,10 or all (default all)"
    )
    g.add_argument(
        "--stride",
        type=parse_stride,
        default="auto",
        help="record statistics every STRIDE query rows; auto (default) = 1 up to 1024 tokens, "
        "else length // 256",
    )


def add_output_options(p: argparse.ArgumentParser, out: bool = True) -> None:
    """--out, --overwrite, --plotlyjs (when `out`: the verb writes a run folder and an HTML page),
    --json, --seed."""
    g = p.add_argument_group("output")
    if out:
        g.add_argument(
            "--out",
            default=None,
            help="run folder to write (default runs/<verb>-<model>-<length>-w<windows>-<hash of the other "
            "settings>: the same command resumes it, other settings get their own folder)",
        )
        g.add_argument("--overwrite", action="store_true", help="replace what --out holds")
        g.add_argument(
            "--plotlyjs",
            choices=("inline", "cdn"),
            default="inline",
            help="inline (default): the HTML page embeds plotly.js and works offline; cdn: a small page "
            "that loads plotly.js from the plotly CDN",
        )
    g.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout (other text to stderr)"
    )
    g.add_argument(
        "--seed", type=bounded_int(0, "random seed"), default=0, help="seed for torch/numpy (default 0)"
    )


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Everything an analysis verb (entropy, logits, pca, report) takes."""
    from lminf_diag.cli.parallel_options import add_parallel_options

    add_model_options(p)
    add_text_options(p)
    add_patch_options(p)
    add_method_options(p)
    add_capture_options(p)
    add_parallel_options(p, "windows")
    add_output_options(p)


def modes(args: argparse.Namespace) -> list[str]:
    """The patch modes asked for, in order, without repeats (default ["lambda"]; none when only
    --method is given)."""
    given = getattr(args, "mode", None)
    if not given and getattr(args, "method", None):
        return []
    return list(dict.fromkeys(given or ["lambda"]))


def methods(args: argparse.Namespace) -> list[str]:
    """The --method names asked for, in order, without repeats.

    >>> methods(argparse.Namespace(method=["streaming", "lambda+yarn"]))
    ['streaming', 'lambda+yarn']
    """
    return list(dict.fromkeys(getattr(args, "method", None) or []))


def labels(args: argparse.Namespace) -> list[str]:
    """The runs to do: "baseline" unless --patched-only, then each mode and each --method unless
    --baseline-only.

    >>> labels(argparse.Namespace(mode=None, method=["streaming", "yarn"]))
    ['baseline', 'streaming', 'yarn']
    """
    base = [] if getattr(args, "patched_only", False) else ["baseline"]
    runs = list(dict.fromkeys(modes(args) + methods(args)))
    return base + ([] if getattr(args, "baseline_only", False) else runs)


def resolve_windows(args: argparse.Namespace) -> int:
    """--windows, or its default: 16 for the shipped lab models, 4 for any other model.

    >>> resolve_windows(argparse.Namespace(windows=None, model="lab-rope"))
    16
    >>> resolve_windows(argparse.Namespace(windows=None, model="smollm2-135m"))
    4
    """
    if getattr(args, "windows", None):
        return int(args.windows)
    return DEFAULT_WINDOWS if str(getattr(args, "model", "")).startswith("lab-") else DEFAULT_WINDOWS_MODEL


def human(args: argparse.Namespace) -> TextIO:
    """Where human-readable text goes: stderr with --json (stdout is then the JSON), else stdout."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def slug(name: str) -> str:
    """A folder-safe short form of a model name or path.

    >>> slug("HuggingFaceTB/SmolLM2-135M"), slug("/tmp/models/tiny/")
    ('HuggingFaceTB_SmolLM2-135M', 'tiny')
    """
    path = Path(name)
    base = path.name if path.exists() or name.startswith((".", "/", "~")) else name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "model"


def default_out(
    verb: str, model: str, length: int | None, settings: dict[str, Any] | None = None, windows: int | None = None
) -> Path:
    """``runs/<verb>-<model>-<length>-w<windows>-<hash>``, the hash over the run's `settings` (those
    `RunDir` compares): the same command resumes its folder, other settings get their own.
    Without `settings`: ``runs/<verb>-<model>-<length>``.

    >>> default_out("entropy", "lab-rope", 512, {"n_global": 10}, windows=16).name[:25]
    'entropy-lab-rope-512-w16-'
    """
    if settings is None:
        return Path("runs") / f"{verb}-{slug(model)}-{length}"
    from lminf_diag.runs import run_folder_name

    return Path("runs") / run_folder_name(verb, slug(model), length, windows, settings)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
