"""`run_sweep`: fluency and information over an (n_global x n_local) grid of one long-context method.

LM-Infinite (and StreamingLLM) keep the first n_global and the last n_local tokens. Each cell
(n_global, n_local) of the grid answers two questions under `ld.method(model, method, ...)`:

- **fluency**: over K windows of `length` tokens of a held-out book, the loss past T minus the
  in-range loss (positions T/2..T) of the same window (`analyze.fluency`, through the loss
  analyzer `analyze.perplexity_by_position`), with a t interval over the K windows. Near 0 means
  the method stays fluent past the training length T.
- **information**: passkey retrieval (`evaluate.passkey`) with the needle placed beyond the
  window (distance from the end of the prompt > n_local), accuracy with a Wilson interval, next
  to the geometric expectation: the share of those needles lying inside the Λ, i.e. entirely
  among the first n_global tokens (`evaluate.passkey_geometry.needle_inside`). Prompts draw
  seeded random depths (`trial_depth`); a draw whose needle lands inside the window is skipped,
  so every cell of one n_local reads the same prompts.

Every finished cell is saved (`evaluate.cells.CellStore`, kind "sweep"): a rerun computes only
the missing cells. `workers` > 1 computes cells in local processes (`lminf_diag.parallel`); the
model is then passed by name (`model="lab-rope"`, loaded once per worker) or pickled.

n_local may be set below the model's true training length to keep a CPU run cheap (`train_len`
then names the pretend T that the fluency figure reads past): which keys a query attends is
decided by n_global and n_local alone, so the retrieval answer carries over; T only sets where
the plain model's positions leave the distribution it was trained on.

Example:
    >>> res = run_sweep("lab-rope", None, n_globals=[0, 4], n_locals=[64, 128], length=512,
    ...                 windows=4, passkey_trials=10)                      # doctest: +SKIP
    >>> res.cell(4, 64).fluency.text()                                      # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.passkey import (
    PasskeyPrompt,
    build_passkey_prompt,
    passkey_key,
    score_answer,
    trial_depth,
)
from lminf_diag.evaluate.passkey_geometry import needle_distance, needle_inside

SWEEP_METHODS = ("lambda", "streaming")
HELD_OUT = "carroll-alice"  # the lab models never saw it
MAX_DRAWS = 40  # prompt draws per wanted trial before giving up on placing needles beyond n_local


@dataclass(frozen=True)
class SweepSettings:
    """What `run_sweep` runs; the settings a run folder's cells are saved under."""

    method: str = "lambda"
    n_globals: tuple[int, ...] = (0, 1, 4, 10, 64)
    n_locals: tuple[int, ...] = (256, 512, 1024)
    length: int = 2048
    windows: int = 4
    passkey_trials: int = 20
    train_len: int | None = None  # None: the model's own
    text: str = HELD_OUT
    haystack: str = "filler"
    seed: int = 0
    max_new_tokens: int = 8

    def check(self) -> None:
        """Clear errors for settings that cannot run."""
        if self.method not in SWEEP_METHODS:
            raise InvalidArgumentError(f"method {self.method!r}: the sweep runs one of {', '.join(SWEEP_METHODS)}")
        if not self.n_globals or min(self.n_globals) < 0:
            raise InvalidArgumentError(f"n_globals {list(self.n_globals)}: give one or more counts >= 0")
        if not self.n_locals or min(self.n_locals) < 1:
            raise InvalidArgumentError(f"n_locals {list(self.n_locals)}: give one or more window sizes >= 1")
        if self.length <= max(self.n_locals):
            raise InvalidArgumentError(
                f"length {self.length} must exceed the largest n_local ({max(self.n_locals)}): no needle "
                "could lie beyond the window"
            )
        if self.windows < 1 or self.passkey_trials < 0:
            raise InvalidArgumentError(
                f"windows {self.windows} (>= 1; 4 or more give an interval), passkey_trials "
                f"{self.passkey_trials} (>= 0)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def cell_settings(self, train_len: int) -> dict[str, Any]:
        """What one cell depends on (a cell saved under other values is recomputed)."""
        d = self.to_dict()
        for k in ("n_globals", "n_locals", "train_len"):
            d.pop(k)
        return {**d, "train_len": int(train_len)}


def cell_key(n_global: int, n_local: int) -> str:
    """The store key of one cell.

    >>> cell_key(4, 256)
    'g4-l256'
    """
    return f"g{int(n_global)}-l{int(n_local)}"


@dataclass
class PasskeyDraw:
    """One passkey prompt placed beyond n_local: its trial index and needle span."""

    trial: int
    prompt: PasskeyPrompt = field(repr=False)

    @property
    def distance(self) -> int:
        return needle_distance(self.prompt.needle_start, self.prompt.n_tokens)


def beyond_prompts(tok: Any, length: int, n_local: int, trials: int, seed: int = 0,
                   haystack: str = "filler") -> list[PasskeyDraw]:
    """`trials` seeded prompts of `length` tokens whose needle lies beyond the window (distance > n_local).

    Prompt t uses depth `trial_depth(seed, length, t)` and key `passkey_key(seed, length, depth, t)`,
    as `run_passkey` does; draws whose needle lands inside the window are skipped.
    """
    out: list[PasskeyDraw] = []
    t = 0
    while len(out) < trials:
        if t >= MAX_DRAWS * max(trials, 1):
            raise InvalidArgumentError(
                f"only {len(out)} of {trials} passkey needles could be placed beyond n_local = {n_local} "
                f"in prompts of {length} tokens; use a longer --length or a smaller n_local"
            )
        depth = trial_depth(seed, length, t)
        p = build_passkey_prompt(tok, length, depth, passkey_key(seed, length, depth, t), haystack)
        if needle_distance(p.needle_start, p.n_tokens) > n_local:
            out.append(PasskeyDraw(t, p))
        t += 1
    return out


def greedy_answer(model: Any, tok: Any, ids: Any, max_new_tokens: int) -> str:
    """Greedy continuation of `ids` (1, n), decoded without special tokens."""
    import torch
    from transformers import GenerationConfig

    from lminf_diag.devices import input_device

    ids = ids.to(input_device(model))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else eos
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=eos, pad_token_id=pad)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def cell_nll(model: Any, windows: Sequence[Any], method: str, n_global: int, n_local: int,
             train_len: int) -> np.ndarray:
    """(K, N) per-token loss of every window under the method (`capture.nll.token_nll`)."""
    import torch

    from lminf_diag.capture.nll import token_nll
    from lminf_diag.patch.methods import method as under

    rows = []
    with torch.no_grad(), under(model, method, train_len=train_len, n_global=n_global, n_local=n_local):
        for ids in windows:
            rows.append(token_nll(model, ids))
    return np.stack(rows).astype(np.float32)


def cell_passkey(model: Any, tok: Any, draws: Sequence[PasskeyDraw], method: str, n_global: int,
                 n_local: int, train_len: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """One record per prompt: trial, key, answer, correct, needle span, distance, inside the Λ."""
    from lminf_diag.patch.methods import method as under

    with under(model, method, train_len=train_len, n_global=n_global, n_local=n_local):
        answers = [greedy_answer(model, tok, d.prompt.input_ids, max_new_tokens) for d in draws]
    return [passkey_record(d, a, n_global, n_local) for d, a in zip(draws, answers, strict=True)]


def passkey_record(draw: PasskeyDraw, answer: str, n_global: int, n_local: int) -> dict[str, Any]:
    """The saved record of one answered prompt, with whether its needle lies inside the Λ."""
    p = draw.prompt
    return {
        "trial": draw.trial, "key": p.key, "answer": answer, "correct": score_answer(answer, p.key),
        "n_tokens": p.n_tokens, "needle_start": p.needle_start, "needle_end": p.needle_end,
        "distance": draw.distance,
        "inside": needle_inside(p.needle_start, p.needle_end, p.n_tokens, n_local, n_global),
    }


_LOADED: dict[str, tuple[Any, Any]] = {}  # one model per process, when passed by name


def resolve_model(model: Any, tok: Any) -> tuple[Any, Any]:
    """(model, tokenizer): a name, or (name, `load_model` keyword arguments), is loaded once per
    process (`ld.load_model`); a loaded model and its tokenizer pass through."""
    named = isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], str)
    if not isinstance(model, str) and not named:
        if tok is None:
            raise InvalidArgumentError("a loaded model needs its tokenizer; pass tok, or the model's name")
        return model, tok
    name, kwargs = (model, {}) if isinstance(model, str) else model
    key = repr((name, sorted(kwargs.items())))
    if key not in _LOADED:
        from lminf_diag.models import load_model

        _LOADED.clear()
        _LOADED[key] = load_model(name, **kwargs)
    return _LOADED[key]


def _windows(tok: Any, s: SweepSettings) -> tuple[list[Any], list[str]]:
    from lminf_diag.capture.windows import plan_windows

    planned = plan_windows(tok, [s.text], s.length, s.windows, repeat=True)
    return [ids for _, ids in planned], [f"{w.text}@{w.offset}" for w, _ in planned]


def unit_cell(model: Any, tok: Any, s: SweepSettings, n_global: int, n_local: int, train_len: int) -> dict[str, Any]:
    """One (n_global, n_local) cell, computed (a unit of work: runs in any process)."""
    t0 = time.perf_counter()
    model, tok = resolve_model(model, tok)
    windows, sources = _windows(tok, s)
    nll = cell_nll(model, windows, s.method, n_global, n_local, train_len)
    draws = beyond_prompts(tok, s.length, n_local, s.passkey_trials, s.seed, s.haystack)
    trials = cell_passkey(model, tok, draws, s.method, n_global, n_local, train_len, s.max_new_tokens)
    record = {"n_global": int(n_global), "n_local": int(n_local), "sources": sources, "passkey": trials}
    return {"record": record, "array": nll, "seconds": time.perf_counter() - t0}


def _train_len(model: Any, tok: Any, s: SweepSettings) -> int:
    if s.train_len is not None:
        return int(s.train_len)
    from lminf_diag.evaluate.cells import model_train_len

    found = model_train_len(resolve_model(model, tok)[0])
    if found is None:
        raise InvalidArgumentError("the model's training length is unknown; pass train_len=N (--train-len N)")
    return int(found)


def run_sweep(model: Any, tok: Any, *, method: str = "lambda", n_globals: Sequence[int] = (0, 1, 4, 10, 64),
              n_locals: Sequence[int] = (256, 512, 1024), length: int = 2048, windows: int = 4,
              passkey_trials: int = 20, train_len: int | None = None, text: str = HELD_OUT,
              haystack: str = "filler", seed: int = 0, max_new_tokens: int = 8, run_dir: Any = None,
              progress: Any = None, workers: int = 1, ray_address: str | None = None) -> Any:
    """Every (n_global, n_local) cell of the grid under `method`; a `SweepResult` (module docstring).

    `model`: a loaded model (with `tok`) or a name for `ld.load_model` (tok None; loaded once per
    process). `run_dir`: a `RunDir` or folder keeping finished cells (resume cell by cell).
    `progress`: a factory such as `lminf_diag.cli.progress.Progress`. `workers` > 1 / `ray_address`:
    cells in parallel (`lminf_diag.parallel.run_units`), saved here as they arrive.
    """
    from lminf_diag.evaluate.cells import CellStore, Steps
    from lminf_diag.evaluate.sweep_result import SweepResult
    from lminf_diag.parallel import Unit, check_workers, run_units

    s = SweepSettings(method, tuple(dict.fromkeys(int(g) for g in n_globals)),
                      tuple(dict.fromkeys(int(n) for n in n_locals)), int(length), int(windows),
                      int(passkey_trials), train_len, text, haystack, int(seed), int(max_new_tokens))
    s.check()
    check_workers(workers, ray_address)
    T = _train_len(model, tok, s)
    if s.length <= T:
        raise InvalidArgumentError(f"length {s.length} must exceed the training length T = {T}: the fluency "
                                   "figure reads the loss past T (pass a larger length or a smaller train_len)")
    if run_dir is None:  # parallel cells pass through files: keep them in a temporary folder
        with tempfile.TemporaryDirectory(prefix="lminf-sweep-") as tmp:
            return run_sweep(model, tok, **{**_kwargs(s), "train_len": T}, run_dir=tmp, progress=progress,
                             workers=workers, ray_address=ray_address)
    store = CellStore(run_dir, "sweep", s.cell_settings(T))
    grid = [(g, n) for n in s.n_locals for g in s.n_globals]
    steps = Steps(progress, len(grid))
    todo = []
    for g, n in grid:
        desc = f"{s.method} n_global={g} n_local={n}: {s.windows} windows + {s.passkey_trials} prompts"
        if store.load(cell_key(g, n)) is None:
            todo.append((desc, Unit(cell_key(g, n), unit_cell, (model, tok, s, g, n, T))))
        else:
            steps.skip(desc)
    if workers <= 1 and ray_address is None:
        for desc, unit in todo:
            with steps.step(desc):
                out = unit.fn(*unit.args)
            store.save(unit.key, out["record"], out["array"], seconds=out["seconds"])
    else:
        what = {u.key: d for d, u in todo}

        def save(key: str, out: dict[str, Any]) -> None:
            store.save(key, out["record"], out["array"], seconds=out["seconds"])
            steps.skip(what[key], f"done in {out['seconds']:.0f} s")

        run_units([u for _, u in todo], workers=workers, ray_address=ray_address, on_done=save)
    cells = {(g, n): store.load(cell_key(g, n)) for g, n in grid}
    return SweepResult.from_cells(s, T, cells)


def _kwargs(s: SweepSettings) -> dict[str, Any]:
    d = asdict(s)
    return {**d, "n_globals": list(s.n_globals), "n_locals": list(s.n_locals)}


__all__ = ["SWEEP_METHODS", "PasskeyDraw", "SweepSettings", "beyond_prompts", "cell_key", "cell_nll",
           "cell_passkey", "greedy_answer", "passkey_record", "resolve_model", "run_sweep", "unit_cell"]
