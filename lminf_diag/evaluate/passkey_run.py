"""Run passkey retrieval over lengths x prompts, per attention mode; resumable prompt by prompt.

By default every length gets `DEFAULT_TRIALS` (50) prompts, each with its own seeded random
depth (uniform in [0, 1], the reference protocol) and key; `depths=[...]` fixes the depths
instead (prompt t at depths[t % len(depths)]). The same prompts are used for every run. Every
finished prompt is saved in the run folder (one cell per run and length, written after each
prompt), so an interrupted run resumes at the next prompt, and asking for more trials later
computes only the new ones.

Cost: one prompt is one prefill plus up to `max_new_tokens` (8) decoding steps. Measured on 2
shared CPU cores, the embedded SmolLM2-135M takes 5-12 s per prompt at 2048 tokens (baseline
11.7 s, LM-Infinite 5.1 s per prompt over 8 prompts); its prefill alone takes about 12 s at 4k,
34 s at 8k and 100 s at 16k, so 50 prompts per length at 16k take about 1.4 hours per run. A
pretend training length (`train_len=1024`, lengths [2048]) gives a quick run that still means
something; the lab models take about 0.1 s per prompt but answer none (the prompt alone is 246
bytes, past their T of 128), so they check the mechanics only.

Example:
    >>> import lminf_diag as ld                                             # doctest: +SKIP
    >>> from lminf_diag.evaluate import run_passkey                         # doctest: +SKIP
    >>> model, tok = ld.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> res = run_passkey(model, tok, [2048], train_len=1024, trials=50)    # doctest: +SKIP
    >>> print(*res.findings(), sep="\\n")                                    # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from lminf_diag.attention.method_spec import MethodSettings, method_names
from lminf_diag.devices import input_device
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.cells import CellStore, ProgressFactory, Steps, model_train_len
from lminf_diag.evaluate.passkey import (
    DEFAULT_TRIALS,
    PasskeyPrompt,
    build_passkey_prompt,
    passkey_key,
    score_answer,
    trial_depth,
)
from lminf_diag.evaluate.passkey_geometry import needle_inside, run_lambda
from lminf_diag.evaluate.passkey_result import DESCRIPTION, PasskeyResult, PasskeyTrial

PROTOCOL = 2  # cells of protocol 1 (trials per depth, no needle span) are recomputed, not misread


def _check(lengths: Sequence[int], depths: Sequence[float] | None, trials: int, modes: Sequence[str]) -> None:
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
        raise InvalidArgumentError(f"lengths must be positive integers of tokens, got {list(lengths)!r}.")
    if depths is not None and (not depths or any(not 0.0 <= float(d) <= 1.0 for d in depths)):
        raise InvalidArgumentError(
            f"depths must be fractions between 0 and 1 (or None for a random depth per prompt), "
            f"got {list(depths)!r}."
        )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InvalidArgumentError(f"trials must be an integer >= 1, got {trials!r}.")
    allowed = method_names()
    bad = [m for m in modes if m not in allowed]
    if not modes or bad or len(set(modes)) != len(modes):
        raise InvalidArgumentError(
            f"modes must be distinct names among {', '.join(allowed)}; got {list(modes)!r}."
        )


def _generate(model: Any, tokenizer: Any, ids: torch.Tensor, max_new_tokens: int) -> str:
    """Greedy continuation of `ids`, decoded (special tokens dropped)."""
    from transformers import GenerationConfig

    device = input_device(model)
    ids = ids.to(device)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
    )
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def top_k_label(top_k: int) -> str:
    """The label of the extra run with the top-k middle tokens.

    >>> top_k_label(5)
    'lambda+top5'
    """
    return f"lambda+top{top_k}"


def _trial(label: str, length: int, p: PasskeyPrompt, trial: int, answer: str, flags: dict) -> PasskeyTrial:
    """The record of one answered prompt, with its needle span and Λ flags (`flags`: n_global, n_local)."""
    record = PasskeyTrial(
        label, length, p.depth, trial, p.key, answer, score_answer(answer, p.key), p.n_tokens,
        p.actual_depth, p.needle_start, p.needle_end,
    )  # fmt: skip
    return _reflag(record, flags)


def _reflag(r: PasskeyTrial, flags: dict) -> PasskeyTrial:
    """A loaded record with its Λ flags recomputed for the current settings (`flags`: n_global, n_local)."""
    if not (r.needle_end > r.needle_start >= 0 and flags["n_local"]):
        return r
    span = (r.needle_start, r.needle_end, r.n_tokens)
    lam = run_lambda(r.mode.split("+top")[0], flags["n_global"], flags["n_local"])
    inside = None if lam is None else needle_inside(*span, n_local=lam[1], n_global=lam[0])
    lam_flag = needle_inside(*span, n_local=flags["n_local"], n_global=flags["n_global"])
    return replace(r, inside=inside, inside_lambda=lam_flag)


def _saver(store: CellStore, key: str, kept: dict[int, PasskeyTrial], spent: float):
    """`save(record)`: add one answered prompt to `kept` and rewrite the cell (records by trial, seconds
    spent on the cell in all, `spent` before this call)."""
    start = time.perf_counter()

    def save(record: PasskeyTrial) -> None:
        kept[record.trial] = record
        seconds = spent + time.perf_counter() - start
        rows = [asdict(kept[t]) for t in sorted(kept)]
        store.save(key, {"records": rows, "seconds": seconds}, seconds=seconds)

    return save


def _run_cell(model, tokenizer, label, length, todo, prompt_for, max_new_tokens, patch, flags, save):
    """Answer the prompts `todo` (trial indices) of one (run, length) under the run's patch, calling
    `save(record)` after each. `label` is a mode, or the top-k run's label (`patch` holds its settings)."""
    from lminf_diag.patch.methods import applied

    mode = "lambda" if label.startswith("lambda+top") else label
    settings = {k: v for k, v in patch.items() if k != "train_len"}
    with applied(model, mode, target_len=length, train_len=patch.get("train_len"), **settings):
        for trial in todo:
            p = prompt_for(length, trial)
            answer = _generate(model, tokenizer, p.input_ids, max_new_tokens)
            save(_trial(label, length, p, trial, answer, flags))


def run_passkey(
    model: Any,
    tokenizer: Any,
    lengths: Sequence[int],
    depths: Sequence[float] | None = None,
    *,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    modes: Sequence[str] = ("baseline", "lambda"),
    settings: MethodSettings | None = None,
    n_global: int | None = None,
    n_local: int | None = None,
    limit: int | None = None,
    haystack: str = "filler",
    max_new_tokens: int = 8,
    train_len: int | None = None,
    run_dir: Any = None,
    progress: ProgressFactory | None = None,
    top_k: int | None = None,
    top_k_from_layer: int | None = None,
    top_k_distance: int | None = None,
) -> PasskeyResult:
    """Passkey accuracy per (run, length) over `trials` prompts per length, with each needle's place in the Λ.

    depths: None (default) draws one depth per prompt, uniform in [0, 1] from
    `trial_depth(seed, length, trial)`; a list of fractions uses them in turn (prompt t at
    depths[t % len(depths)]). trials: prompts per length (default 50). Keys come from
    `passkey_key(seed, length, depth, trial)`: the same prompts for every run.
    modes: "baseline" (no patch) and LM-Infinite modes ("lambda", "mask_only", "cap_only",
    "window"), each run under `lm_infinite(model, n_global, n_local, limit, mode=m)`.
    settings: the attention settings of every run (`MethodSettings`: n_global, n_local, limit and
    the top-k ones); the loose keywords n_global ... top_k_distance are the deprecated form of
    the same (None: the `MethodSettings` default), refused together with `settings`.
    train_len: the training length (default: read from the model), the default of n_local and
    the boundary between "within" and "beyond".
    Every record holds the needle's token span, whether it lies inside the run's Λ (None for the
    baseline) and inside the "lambda" settings' Λ (`passkey_geometry.needle_inside`).
    top_k > 0 adds one run after `modes`, labelled `top_k_label(top_k)` ("lambda+top5"): the
    "lambda" mode plus, for the row that predicts each next token, the top_k best "middle" keys per
    head in layers >= top_k_from_layer, seen at distance top_k_distance (None = n_local // 2);
    see `lm_infinite`. Its KV cache is not bounded.
    run_dir: a `RunDir` or a folder path; each (run, length) cell is saved there after every
    prompt and reloaded when the run is repeated with the same settings (trials excepted: more
    trials compute only the new prompts, fewer reuse the first ones).
    progress: a factory called with the number of (run, length) steps, such as
    `lminf_diag.cli.progress.Progress` (prints elapsed time and time left on stderr).
    Cost: one prefill plus up to max_new_tokens decoding steps per prompt (module docstring).

    Example:
        >>> res = run_passkey(model, tok, [2048, 4096], trials=50, train_len=1024)  # doctest: +SKIP
        >>> res.accuracy_by_length()                                               # doctest: +SKIP
    """
    from lminf_diag.models.loader import model_name

    lengths = [int(n) if isinstance(n, np.integer) else n for n in lengths]
    depths = None if depths is None else [float(d) for d in depths]
    modes = list(modes)
    _check(lengths, depths, trials, modes)
    if max_new_tokens < 1:
        raise InvalidArgumentError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    ms = MethodSettings.merge(
        settings, n_global=n_global, n_local=n_local, limit=limit, top_k=top_k,
        top_k_from_layer=top_k_from_layer, top_k_distance=top_k_distance,
    )  # fmt: skip
    train_len = train_len or model_train_len(model)
    if ms.n_local is None and train_len is None and any(m != "baseline" for m in modes):
        raise InvalidArgumentError(
            "The model's training length is unknown, so the patch window is too: pass train_len or n_local."
        )
    patch = {**ms.patch(), "train_len": train_len}
    patches = {m: patch for m in modes}
    if ms.top_k:
        from lminf_diag.attention.spec import LambdaSpec

        top = ms.top()
        LambdaSpec.resolve(ms.n_local or train_len or 1, **ms.kwargs())  # bad values fail now
        modes.append(top_k_label(ms.top_k))
        patches[modes[-1]] = {**patch, **top}
    flags = {"n_global": ms.n_global, "n_local": ms.n_local or train_len}
    common = {
        "model": model_name(model),
        "depths": "random" if depths is None else depths,
        "seed": seed,
        "haystack": os.fspath(haystack),
        "max_new_tokens": max_new_tokens,
        "protocol": PROTOCOL,
    }
    stores = {  # the baseline does not depend on the patch settings (its flags are recomputed on load)
        m: CellStore(run_dir, "passkey", common if m == "baseline" else {**common, **patches[m]})
        for m in modes
    }
    prompts: dict[tuple[int, int], PasskeyPrompt] = {}

    def prompt_for(length: int, trial: int) -> PasskeyPrompt:
        if (length, trial) not in prompts:
            depth = trial_depth(seed, length, trial, depths)
            key = passkey_key(seed, length, depth, trial)
            prompts[(length, trial)] = build_passkey_prompt(tokenizer, length, depth, key, haystack)
        return prompts[(length, trial)]

    prompt_for(min(lengths), 0)  # a length too short for the prompt fails before any work
    records: list[PasskeyTrial] = []
    steps = Steps(progress, len(modes) * len(lengths))
    for mode in modes:
        for length in lengths:
            key = f"{mode}_{length}"
            cell = stores[mode].load(key) or {}
            kept = {int(r["trial"]): _reflag(PasskeyTrial(**r), flags) for r in cell.get("records", [])}
            todo = [t for t in range(trials) if t not in kept]
            name = f"{mode}: {trials} prompt(s) of {length} tokens"
            if not todo:
                records += [kept[t] for t in range(trials)]
                steps.skip(name)
                continue
            save = _saver(stores[mode], key, kept, float(cell.get("seconds", 0.0)))
            resumed = f" ({trials - len(todo)} kept)" if len(todo) < trials else ""
            with steps.step(name + resumed):
                _run_cell(
                    model,
                    tokenizer,
                    mode,
                    length,
                    todo,
                    prompt_for,
                    max_new_tokens,
                    patches[mode],
                    flags,
                    save,
                )
            records += [kept[t] for t in range(trials)]
    return PasskeyResult(
        labels=modes,
        train_len=train_len,
        records=records,
        lengths=lengths,
        depths=[] if depths is None else depths,
        trials=trials,
        haystack=os.fspath(haystack),
        n_global=ms.n_global,
        n_local=flags["n_local"],
        seed=seed,
    )


__all__ = ["DESCRIPTION", "PasskeyResult", "PasskeyTrial", "run_passkey", "top_k_label"]
