"""Run passkey retrieval over lengths x depths x trials, per attention mode; resumable.

Example:
    >>> import lminf_diag as ld                                             # doctest: +SKIP
    >>> from lminf_diag.evaluate import run_passkey                         # doctest: +SKIP
    >>> model, tok = ld.load_model("smollm2-135m")                          # doctest: +SKIP
    >>> res = run_passkey(model, tok, [4096, 16384], [0.0, 0.5, 1.0])       # doctest: +SKIP
    >>> res.summary()["lambda"]["accuracy_beyond"]                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from lminf_diag.analyze.base import AnalysisResult, nanmean
from lminf_diag.attention.spec import MODES
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.cells import CellStore, ProgressFactory, Steps, model_train_len
from lminf_diag.evaluate.passkey import PasskeyPrompt, build_passkey_prompt, passkey_key, score_answer
from lminf_diag.evaluate.passkey_figures import passkey_figures

DESCRIPTION = (
    "Passkey retrieval: a 5-digit key is hidden at a given depth in irrelevant text (the reference filler "
    "sentences, or a book) of a given length, "
    "and the model is asked for it (greedy decoding; correct when the first number it writes is the key). "
    "Each cell is the fraction of trials answered correctly; lengths right of the dashed line are beyond "
    "the training length."
)


@dataclass(frozen=True)
class PasskeyTrial:
    """One prompt and its answer."""

    mode: str
    length: int
    depth: float
    trial: int
    key: int
    answer: str
    correct: bool
    n_tokens: int
    actual_depth: float


@dataclass
class PasskeyResult(AnalysisResult):
    """Accuracy per (mode, length, depth); `labels` are the modes, baseline first, then the top-k
    run ("lambda+top5") when one was asked for."""

    records: list[PasskeyTrial] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    depths: list[float] = field(default_factory=list)
    trials: int = 1
    haystack: str = "filler"
    title: str = "Passkey retrieval"
    description: str = DESCRIPTION

    def accuracy_grid(self, mode: str) -> np.ndarray:
        """(n_depths, n_lengths) accuracy of `mode` (NaN where no trial was run)."""
        grid = np.full((len(self.depths), len(self.lengths)), np.nan)
        frame = self.to_frame()
        frame = frame[frame["mode"] == mode]
        for (length, depth), cell in frame.groupby(["length", "depth"]):
            grid[self.depths.index(float(depth)), self.lengths.index(int(length))] = cell["correct"].mean()
        return grid

    def accuracy_by_length(self) -> pd.DataFrame:
        """Accuracy over depths and trials: one row per mode, one column per length."""
        frame = self.to_frame()
        if frame.empty:
            return pd.DataFrame(index=self.labels, columns=self.lengths, dtype=float)
        table = frame.pivot_table(index="mode", columns="length", values="correct", aggfunc="mean")
        return table.reindex(index=self.labels, columns=self.lengths)

    def summary(self) -> dict[str, dict[str, float]]:
        """mode -> accuracy (all prompts), accuracy_within (length <= train_len), accuracy_beyond, n_prompts."""
        frame = self.to_frame()
        out: dict[str, dict[str, float]] = {}
        for mode in self.labels:
            f = frame[frame["mode"] == mode] if not frame.empty else frame
            correct = f["correct"].to_numpy(dtype=float) if not f.empty else np.zeros(0)
            lengths = f["length"].to_numpy() if not f.empty else np.zeros(0)
            within = lengths <= self.train_len if self.train_len is not None else np.ones(lengths.size, bool)
            out[mode] = {
                "accuracy": float(nanmean(correct)) if correct.size else float("nan"),
                "accuracy_within": float(nanmean(correct[within])) if within.any() else float("nan"),
                "accuracy_beyond": float(nanmean(correct[~within])) if (~within).any() else float("nan"),
                "n_prompts": float(correct.size),
            }
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt: mode, length, depth, trial, key, answer, correct, n_tokens, actual_depth."""
        columns = [f.name for f in PasskeyTrial.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(r) for r in self.records], columns=columns)

    def figures(self) -> list:
        """Heat maps (length x depth) per mode side by side, and accuracy vs length per mode."""
        return passkey_figures(self)


def _check(lengths: Sequence[int], depths: Sequence[float], trials: int, modes: Sequence[str]) -> None:
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
        raise InvalidArgumentError(f"lengths must be positive integers of tokens, got {list(lengths)!r}.")
    if not depths or any(not 0.0 <= float(d) <= 1.0 for d in depths):
        raise InvalidArgumentError(f"depths must be fractions between 0 and 1, got {list(depths)!r}.")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InvalidArgumentError(f"trials must be an integer >= 1, got {trials!r}.")
    allowed = ("baseline", *MODES)
    bad = [m for m in modes if m not in allowed]
    if not modes or bad or len(set(modes)) != len(modes):
        raise InvalidArgumentError(
            f"modes must be distinct names among {', '.join(allowed)}; got {list(modes)!r}."
        )


def _generate(model: Any, tokenizer: Any, ids: torch.Tensor, max_new_tokens: int) -> str:
    """Greedy continuation of `ids`, decoded (special tokens dropped)."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
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


def _run_cell(model, tokenizer, label, length, depths, trials, prompt_for, max_new_tokens, patch):
    """The trials of one (run, length): every depth, greedy answers under the run's patch. `label` is
    a mode, or the top-k run's label (then `patch` holds its top-k settings)."""
    from lminf_diag.patch import lm_infinite

    out = []
    mode = "lambda" if label.startswith("lambda+top") else label
    with nullcontext() if mode == "baseline" else lm_infinite(model, mode=mode, **patch):
        for depth in depths:
            for trial in range(trials):
                p = prompt_for(length, depth, trial)
                answer = _generate(model, tokenizer, p.input_ids, max_new_tokens)
                correct = score_answer(answer, p.key)
                out.append(
                    PasskeyTrial(
                        label, length, depth, trial, p.key, answer, correct, p.n_tokens, p.actual_depth
                    )
                )
    return out


def run_passkey(
    model: Any,
    tokenizer: Any,
    lengths: Sequence[int],
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    *,
    trials: int = 1,
    seed: int = 0,
    modes: Sequence[str] = ("baseline", "lambda"),
    n_global: int = 10,
    n_local: int | None = None,
    limit: int | None = None,
    haystack: str = "filler",
    max_new_tokens: int = 8,
    train_len: int | None = None,
    run_dir: Any = None,
    progress: ProgressFactory | None = None,
    top_k: int = 0,
    top_k_from_layer: int = 4,
    top_k_distance: int | None = None,
) -> PasskeyResult:
    """Passkey accuracy per (mode, length, depth): greedy answers to `trials` prompts per cell.

    modes: "baseline" (no patch) and LM-Infinite modes ("lambda", "mask_only", "cap_only",
    "window"), each run under `lm_infinite(model, n_global, n_local, limit, mode=m)`.
    Keys come from `passkey_key(seed, length, depth, trial)`: the same prompts for every mode.
    train_len: the training length (default: read from the model), the default of n_local and
    the boundary between "within" and "beyond".
    top_k > 0 adds one run after `modes`, labelled `top_k_label(top_k)` ("lambda+top5"): the
    "lambda" mode plus, for the row that predicts each next token, the top_k best "middle" keys per
    head in layers >= top_k_from_layer, seen at distance top_k_distance (None = n_local // 2);
    see `lm_infinite`. Its KV cache is not bounded.
    run_dir: a `RunDir` or a folder path; each finished (run, length) is saved there and
    loaded instead of recomputed when the run is repeated with the same settings.
    progress: a factory called with the number of (mode, length) steps, such as
    `lminf_diag.cli.progress.Progress` (prints elapsed time and time left on stderr).

    Example:
        >>> res = run_passkey(model, tok, [2048, 8192], [0.0, 0.5, 1.0], trials=2)  # doctest: +SKIP
        >>> res.accuracy_by_length()                                                # doctest: +SKIP
    """
    from lminf_diag.models.loader import model_name

    lengths = [int(n) if isinstance(n, np.integer) else n for n in lengths]
    depths = [float(d) for d in depths]
    modes = list(modes)
    _check(lengths, depths, trials, modes)
    if max_new_tokens < 1:
        raise InvalidArgumentError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    train_len = train_len or model_train_len(model)
    patch = {"n_global": n_global, "n_local": n_local, "limit": limit, "train_len": train_len}
    patches = {m: patch for m in modes}
    if top_k:
        from lminf_diag.attention.spec import LambdaSpec

        top = {"top_k": top_k, "top_k_from_layer": top_k_from_layer, "top_k_distance": top_k_distance}
        LambdaSpec.resolve(n_local or train_len or 1, n_global, n_local, limit, **top)  # bad values fail now
        modes.append(top_k_label(top_k))
        patches[modes[-1]] = {**patch, **top}
    common = {
        "model": model_name(model),
        "depths": depths,
        "trials": trials,
        "seed": seed,
        "haystack": os.fspath(haystack),
        "max_new_tokens": max_new_tokens,
    }
    stores = {  # the baseline does not depend on the patch settings
        m: CellStore(run_dir, "passkey", common if m == "baseline" else {**common, **patches[m]}) for m in modes
    }
    prompts: dict[tuple[int, float, int], PasskeyPrompt] = {}

    def prompt_for(length: int, depth: float, trial: int) -> PasskeyPrompt:
        if (length, depth, trial) not in prompts:
            key = passkey_key(seed, length, depth, trial)
            prompts[(length, depth, trial)] = build_passkey_prompt(tokenizer, length, depth, key, haystack)
        return prompts[(length, depth, trial)]

    prompt_for(min(lengths), depths[0], 0)  # a length too short for the prompt fails before any work
    records: list[PasskeyTrial] = []
    steps = Steps(progress, len(modes) * len(lengths))
    for mode in modes:
        for length in lengths:
            name = f"{mode}: {len(depths) * trials} prompt(s) of {length} tokens"
            cell = stores[mode].load(f"{mode}_{length}")
            if cell is not None:
                records += [PasskeyTrial(**r) for r in cell["records"]]
                steps.skip(name)
                continue
            start = time.perf_counter()
            with steps.step(name):
                done = _run_cell(
                    model, tokenizer, mode, length, depths, trials, prompt_for, max_new_tokens, patches[mode]
                )
            stores[mode].save(
                f"{mode}_{length}",
                {"records": [asdict(r) for r in done]},
                seconds=time.perf_counter() - start,
            )
            records += done
    return PasskeyResult(
        labels=modes,
        train_len=train_len,
        records=records,
        lengths=lengths,
        depths=depths,
        trials=trials,
        haystack=os.fspath(haystack),
    )


__all__ = ["PasskeyResult", "PasskeyTrial", "run_passkey", "top_k_label"]
