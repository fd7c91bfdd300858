"""Per-token loss over several documents, per attention mode: the mean curve and its spread.

Each document contributes its first `length` tokens; the model is run once per (mode,
document) and `token_nll` gives the loss of every next token without the full logits. The
baseline (no patch) may be stopped at `baseline_max_length` tokens: past that its positions
are NaN, and the result says so.

Example:
    >>> import lminf_diag as ld                                                    # doctest: +SKIP
    >>> model, tok = ld.load_model("smollm2-135m")                                 # doctest: +SKIP
    >>> res = perplexity_over_documents(model, tok, ["carroll-alice"], 16384)      # doctest: +SKIP
    >>> res.summary()["lambda"]["nll_1_2x"]                                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from lminf_diag.attention.spec import MODES
from lminf_diag.errors import InvalidArgumentError, TextTooShortError
from lminf_diag.evaluate.cells import CellStore, ProgressFactory, Steps, cell_name, model_train_len
from lminf_diag.evaluate.documents_result import DocumentPerplexityResult

DEFAULT_DOCUMENTS = ("chesterton-thursday", "bryant-stories", "shakespeare-hamlet")


def resolve_documents(sources: Sequence[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(name, source) per document: bundled book names, text files, and every .txt in a folder.

    Names are book names or file stems, made unique with a numeric suffix.

    >>> resolve_documents(["carroll-alice"])
    [('carroll-alice', 'carroll-alice')]
    """
    from lminf_diag.data import list_books

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[tuple[str, str]] = []
    books = set(list_books())
    for src in sources:
        text = os.fspath(src)
        bare = text[:-4] if text.endswith(".txt") else text
        path = Path(text).expanduser()
        if bare in books and "/" not in text and os.sep not in text:
            found.append((bare, bare))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
            if not files:
                raise InvalidArgumentError(
                    f"The folder {path} holds no .txt files; pass text files or book names."
                )
            found += [(p.stem, str(p)) for p in files]
        elif path.is_file():
            found.append((path.stem, str(path)))
        else:
            raise InvalidArgumentError(
                f"Unknown document {text!r}: not a bundled book, a text file or a folder. "
                f"Bundled books: {', '.join(sorted(books))}."
            )
    if not found:
        raise InvalidArgumentError("No documents given; pass book names, text files or a folder.")
    seen: dict[str, int] = {}
    out = []
    for name, source in found:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}-{seen[name]}", source))
    return out


def _window(tokenizer: Any, source: str, length: int) -> tuple[Any, str | None]:
    """(ids (1, length), None) or (None, a note saying why the document is skipped)."""
    from lminf_diag.data import load_text, token_window

    text, _ = load_text(source)
    try:
        return token_window(tokenizer, text, length), None
    except TextTooShortError:
        n = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        return None, f"{source}: {n} tokens, shorter than the requested {length}; skipped"


def _check(length: int, modes: Sequence[str], baseline_max_length: int | None) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise InvalidArgumentError(f"length must be an integer >= 2 tokens, got {length!r}.")
    allowed = ("baseline", *MODES)
    bad = [m for m in modes if m not in allowed]
    if not modes or bad or len(set(modes)) != len(modes):
        raise InvalidArgumentError(
            f"modes must be distinct names among {', '.join(allowed)}; got {list(modes)!r}."
        )
    if baseline_max_length is not None and (
        isinstance(baseline_max_length, bool)
        or not isinstance(baseline_max_length, int)
        or baseline_max_length < 2
    ):
        raise InvalidArgumentError(
            f"baseline_max_length must be an integer >= 2 or None, got {baseline_max_length!r}."
        )


def _nll_row(model: Any, ids: Any, mode: str, length: int, patch: dict[str, Any]) -> np.ndarray:
    """(length,) float32 per-token NLL of one window under `mode` (NaN past the window it was given)."""
    from lminf_diag.capture.nll import token_nll
    from lminf_diag.patch import lm_infinite

    with nullcontext() if mode == "baseline" else lm_infinite(model, mode=mode, **patch):
        values = token_nll(model, ids.to(next(model.parameters()).device))
    row = np.full(length, np.nan, dtype=np.float32)
    row[: values.size] = values
    return row


def perplexity_over_documents(
    model: Any,
    tokenizer: Any,
    sources: Sequence[str | os.PathLike[str]] = DEFAULT_DOCUMENTS,
    length: int = 16384,
    *,
    modes: Sequence[str] = ("baseline", "lambda"),
    n_global: int = 10,
    n_local: int | None = None,
    limit: int | None = None,
    baseline_max_length: int | None = None,
    smooth: int | None = None,
    train_len: int | None = None,
    run_dir: Any = None,
    progress: ProgressFactory | None = None,
) -> DocumentPerplexityResult:
    """Per-token NLL of the first `length` tokens of each document, per mode; mean and spread.

    sources: bundled book names, text files, folders (every .txt inside). A document shorter
    than `length` is skipped, with a note in `result.notes` giving its length in tokens.
    modes: "baseline" (no patch) and LM-Infinite modes, each under
    `lm_infinite(model, n_global, n_local, limit, mode=m)`.
    baseline_max_length: run the baseline on the first that many tokens only (it is slow and
    degenerate far past the training length); `result.capped_at["baseline"]` records it.
    smooth: moving-average window of the curves (default length // 32, at most 256).
    train_len: the training length (default: read from the model), the default of n_local and
    the unit of the position ranges of the key figures.
    run_dir: a `RunDir` or folder path; each (mode, document) is saved and reused on rerun.
    progress: a factory called with the number of forward passes, such as
    `lminf_diag.cli.progress.Progress` (prints elapsed time and time left on stderr).

    Example:
        >>> res = perplexity_over_documents(model, tok, ["carroll-alice", "my/folder"], 16384,
        ...                                 baseline_max_length=12288)    # doctest: +SKIP
        >>> res.summary()["baseline"]["capped_at"]                        # doctest: +SKIP
        12288.0
    """
    from lminf_diag.models.loader import model_name

    modes = list(modes)
    _check(length, modes, baseline_max_length)
    docs = resolve_documents(sources)
    if baseline_max_length is not None and baseline_max_length >= length:
        baseline_max_length = None
    train_len = train_len or model_train_len(model)
    patch = {"n_global": n_global, "n_local": n_local, "limit": limit, "train_len": train_len}
    common = {"model": model_name(model), "length": length}
    stores = {  # what a cell depends on: the baseline on its cap, a mode on the patch settings
        m: CellStore(run_dir, "ppl", {**common, "baseline_max_length": baseline_max_length})
        if m == "baseline"
        else CellStore(run_dir, "ppl", {**common, **patch})
        for m in modes
    }
    windows: dict[str, Any] = {}
    notes: list[str] = []
    for name, source in docs:
        ids, note = _window(tokenizer, source, length)
        if note is None:
            windows[name] = ids
        else:
            notes.append(note)
    digests = {
        name: hashlib.sha1(ids.numpy().astype(np.int64).tobytes()).hexdigest()
        for name, ids in windows.items()
    }
    nll: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    steps = Steps(progress, len(modes) * len(windows))
    for mode in modes:
        cap = baseline_max_length if mode == "baseline" else None
        for name, ids in windows.items():
            key, what = f"{mode}_{cell_name(name)}", f"{mode}: {name}, forward over {cap or length} tokens"
            cell = stores[mode].load(key)
            if cell is not None and cell.get("window") == digests[name]:  # the same tokens as then
                nll[mode].append(np.asarray(cell["array"], dtype=np.float32))
                steps.skip(what)
                continue
            start = time.perf_counter()
            with steps.step(what):
                row = _nll_row(model, ids[:, :cap] if cap else ids, mode, length, patch)
            meta = {"document": name, "mode": mode, "n_tokens": int(cap or length), "window": digests[name]}
            stores[mode].save(key, meta, array=row, seconds=time.perf_counter() - start)
            nll[mode].append(row)
    curves = {m: np.stack(v) if v else np.full((0, length), np.nan, np.float32) for m, v in nll.items()}
    capped = {m: (baseline_max_length if m == "baseline" else None) for m in modes}
    return DocumentPerplexityResult.build(
        labels=modes,
        train_len=train_len,
        length=length,
        documents=list(windows),
        nll=curves,
        capped_at=capped,
        notes=notes,
        smooth=smooth,
    )


__all__ = ["DEFAULT_DOCUMENTS", "perplexity_over_documents", "resolve_documents"]
