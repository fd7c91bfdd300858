"""``diag generate``: continue a long prompt greedily, baseline and patched, and time both.

The prompt is --length tokens of --text, followed by --prompt-text when given (``--length 0``
uses the prompt text alone). Each run prints its decoded continuation and its tokens/s.

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["generate", "--length", "12000", "--max-new-tokens", "40"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from lminf_diag.cli import options
from lminf_diag.cli.progress import Progress, timed

VERB = "generate"


@dataclass
class Generation:
    """One run's continuation and speed."""

    label: str
    text: str
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the verb."""
    p = options.new_parser(
        subparsers,
        VERB,
        "greedy continuation of a long prompt, baseline and patched, with tokens/s",
        "Take --length tokens of --text (plus --prompt-text) as the prompt and generate\n"
        "--max-new-tokens tokens greedily with the plain model and with each --mode of LM-Infinite.\n"
        "Prints both continuations and the decoding speed of each.",
        [
            "diag generate --length 12000 --max-new-tokens 40",
            "diag generate --length 0 --prompt-text 'Once upon a time' --max-new-tokens 30",
            "diag generate --length 16384 --patched-only --json",
        ],
    )
    options.add_model_options(p)
    options.add_text_options(p, min_length=0)
    options.add_patch_options(p)
    options.add_method_options(p)
    g = p.add_argument_group("generation")
    g.add_argument(
        "--max-new-tokens",
        type=options.bounded_int(1, "tokens to generate"),
        default=32,
        help="tokens to generate per run (default 32)",
    )
    g.add_argument("--prompt-text", default=None, help="text appended after the --length tokens of --text")
    options.add_output_options(p, out=False)
    return p


def prompt_ids(args: argparse.Namespace, tokenizer: Any) -> Any:
    """(1, N) prompt: the token window of --text, then --prompt-text's tokens."""
    import torch

    from lminf_diag.data import load_text, token_window
    from lminf_diag.errors import InvalidArgumentError

    parts = []
    if args.length:
        if args.length < 2:
            raise InvalidArgumentError("--length must be 0 (prompt text only) or at least 2 tokens.")
        parts.append(token_window(tokenizer, load_text(args.text)[0], args.length, repeat=args.repeat))
    if args.prompt_text:
        extra = tokenizer(args.prompt_text, add_special_tokens=not parts, return_tensors="pt")["input_ids"]
        parts.append(extra.to(torch.long))
    if not parts:
        raise InvalidArgumentError("--length 0 needs --prompt-text: there would be no prompt at all.")
    return torch.cat(parts, dim=1)


def generate_one(model: Any, tokenizer: Any, ids: Any, k: int, patch: dict | None, label: str) -> Generation:
    """Greedy generation of up to k tokens (timed step by step), under the patch when given."""
    from lminf_diag.evaluate.decoding import decode

    t0 = time.perf_counter()
    run = decode(model, ids, k, patch=patch, label=label)
    seconds = time.perf_counter() - t0
    eos = tokenizer.eos_token_id
    toks = run.tokens[: run.tokens.index(eos) + 1] if eos in run.tokens else run.tokens
    gen = Generation(label, tokenizer.decode(toks, skip_special_tokens=True), len(toks), seconds)
    gen.run = run
    return gen


def growth_rows(run, every: int) -> list[str]:
    """'context  ms/token  KV MB' lines every `every` steps: how cost and memory grow."""
    lines = []
    for i in range(0, len(run.context), every):
        lines.append(f"  context {int(run.context[i]):>7}  {run.step_seconds[i] * 1000:8.1f} ms/token  "
                     f"KV cache {run.cache_mb[i]:8.1f} MB")
    return lines


def run(args: argparse.Namespace) -> int:
    """Generate with each run and print the continuations; returns 0."""
    from lminf_diag.cli.pipeline import patch_settings
    from lminf_diag.errors import InvalidArgumentError
    from lminf_diag.models import load_model, model_info

    stream = options.human(args)
    with timed("loading model and text"):
        options.seed_everything(args.seed)
        model, tok = load_model(args.model, **options.load_kwargs(args))
        info = model_info(model, train_len=args.train_len)
        ids = prompt_ids(args, tok)
    if info.train_len is None and args.n_local is None and not args.baseline_only:
        raise InvalidArgumentError(
            f"The training length of {args.model} is unknown; pass --train-len or --n-local."
        )
    labels = options.labels(args)
    progress = Progress(len(labels))
    results = []
    for lab in labels:
        patch = None if lab == "baseline" else patch_settings(args, lab, info.train_len)
        with progress.step(f"{lab}: {args.max_new_tokens} new tokens after a {ids.shape[1]}-token prompt"):
            results.append(generate_one(model, tok, ids, args.max_new_tokens, patch, lab))
    for g in results:
        print(
            f"\n=== {g.label}: {g.new_tokens} tokens in {g.seconds:.2f} s ({g.tokens_per_s:.2f} tokens/s) ===",
            file=stream,
        )
        print(g.text, file=stream)
        print(f"prefill of {g.run.prefill_tokens} tokens: {g.run.prefill_seconds:.2f} s", file=stream)
        for line in growth_rows(g.run, max(1, len(g.run.context) // 4)):
            print(line, file=stream)
    rows = [["label", "new tokens", "seconds", "tokens/s", "decode ms/token", "KV MB"]]
    rows += [[g.label, str(g.new_tokens), f"{g.seconds:.2f}", f"{g.tokens_per_s:.2f}",
              f"{g.run.ms_per_token:.1f}", f"{g.run.cache_mb[-1]:.1f}"] for g in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("", file=stream)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=stream)
    if args.json:
        payload = {
            "model": args.model,
            "prompt_tokens": int(ids.shape[1]),
            "train_len": info.train_len,
            "runs": {
                g.label: {**asdict(g), "tokens_per_s": g.tokens_per_s, "decode_ms_per_token": g.run.ms_per_token,
                          "kv_cache_mb": float(g.run.cache_mb[-1]), "prefill_seconds": g.run.prefill_seconds}
                for g in results
            },
        }
        print(json.dumps(payload, indent=2))
    return 0
