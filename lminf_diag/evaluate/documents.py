"""Per-token loss over several documents, per attention mode: replicated over documents.

Each document contributes its first `length` tokens (one independent window); the model is
run once per (mode, document) and `token_nll` gives the loss of every next token without the
full logits. The baseline (no patch) may be stopped at `baseline_max_length` tokens: past
that its positions are NaN, and the result says so.

Optional, per document: `recompute=True` adds the in-distribution reference on the same tokens
(label "recompute": every token from its last T tokens re-encoded, `evaluate.recompute`, with
its cost stated); `control="shuffled"` runs `control_modes` (default the baseline) once more on
a paragraph-shuffled copy of the same paragraphs (labels "<mode> (shuffled)", `data.control`).

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
from pathlib import Path
from typing import Any

import numpy as np

from lminf_diag.attention.method_spec import MethodSettings, method_names
from lminf_diag.devices import input_device
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
    allowed = method_names()
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
    from lminf_diag.patch.methods import applied

    settings = {k: v for k, v in patch.items() if k != "train_len"}
    with applied(model, mode, target_len=length, train_len=patch.get("train_len"), **settings):
        values = token_nll(model, ids.to(input_device(model)))
    row = np.full(length, np.nan, dtype=np.float32)
    row[: values.size] = values
    return row


def _control_window(tokenizer: Any, source: str, length: int, seed: int) -> Any:
    """(1, length) ids of the paragraph-shuffled copy of the document's first `length` tokens."""
    from lminf_diag.data import load_text
    from lminf_diag.data.control import shuffled_window

    return shuffled_window(tokenizer, load_text(source)[0], length, seed)


def _plan(
    modes: list[str], recompute: bool, control: str | None, control_modes: Sequence[str] | None
) -> list:
    """[(label, mode, shuffled)] in run order: the modes, "recompute", then the shuffled controls."""
    from lminf_diag.analyze.loss import RECOMPUTE, SHUFFLED
    from lminf_diag.data.control import CONTROLS

    if control is not None and control not in CONTROLS:
        raise InvalidArgumentError(f"control {control!r}; known controls: {', '.join(CONTROLS)}")
    plan = [(m, m, False) for m in modes]
    if recompute:
        plan.append((RECOMPUTE, RECOMPUTE, False))
    if control:
        chosen = list(control_modes) if control_modes else ["baseline" if "baseline" in modes else modes[0]]
        bad = [m for m in chosen if m not in modes]
        if bad:
            raise InvalidArgumentError(
                f"control_modes {bad} are not among the modes run ({', '.join(modes)})"
            )
        plan += [(m + SHUFFLED, m, True) for m in chosen]
    return plan


def perplexity_over_documents(
    model: Any,
    tokenizer: Any,
    sources: Sequence[str | os.PathLike[str]] = DEFAULT_DOCUMENTS,
    length: int = 16384,
    *,
    modes: Sequence[str] = ("baseline", "lambda"),
    settings: MethodSettings | None = None,
    n_global: int | None = None,
    n_local: int | None = None,
    limit: int | None = None,
    baseline_max_length: int | None = None,
    smooth: int | None = None,
    train_len: int | None = None,
    run_dir: Any = None,
    progress: ProgressFactory | None = None,
    recompute: bool = False,
    recompute_stride: int | None = None,
    control: str | None = None,
    control_modes: Sequence[str] | None = None,
    control_seed: int = 0,
) -> DocumentPerplexityResult:
    """Per-token NLL of the first `length` tokens of each document, per mode; mean and spread.

    sources: bundled book names, text files, folders (every .txt inside). A document shorter
    than `length` is skipped, with a note in `result.notes` giving its length in tokens.
    modes: "baseline" (no patch) and LM-Infinite modes, each under
    `lm_infinite(model, n_global, n_local, limit, mode=m)`.
    settings: the attention settings of every run (`MethodSettings`); the loose keywords n_global,
    n_local, limit are its deprecated form (None: the `MethodSettings` default), refused together.
    baseline_max_length: run the baseline on the first that many tokens only (it is slow and
    degenerate far past the training length); `result.capped_at["baseline"]` records it.
    smooth: moving-average window of the curves (default T / 16, `analyze.perplexity.smooth_window`).
    train_len: the training length (default: read from the model), the default of n_local and
    the unit of the position ranges of the key figures.
    run_dir: a `RunDir` or folder path; each (mode, document) is saved and reused on rerun.
    progress: a factory called with the number of forward passes, such as
    `lminf_diag.cli.progress.Progress` (prints elapsed time and time left on stderr).
    recompute: add the label "recompute", each token from its last T tokens re-encoded with plain
    attention (`recompute_nll`, stride `recompute_stride`, default T // 4); its cost is stated.
    control: "shuffled" adds "<mode> (shuffled)" for each of `control_modes` (default: the
    baseline, or the first mode): the same run on a paragraph-shuffled copy (seed `control_seed`).

    Example:
        >>> res = perplexity_over_documents(model, tok, ["carroll-alice", "my/folder"], 16384,
        ...                                 baseline_max_length=12288)    # doctest: +SKIP
        >>> res.summary()["baseline"]["capped_at"]                        # doctest: +SKIP
        12288.0
    """
    from lminf_diag.models.loader import model_name

    modes = list(modes)
    _check(length, modes, baseline_max_length)
    plan = _plan(modes, recompute, control, control_modes)
    docs = resolve_documents(sources)
    if baseline_max_length is not None and baseline_max_length >= length:
        baseline_max_length = None
    ms = MethodSettings.merge(settings, n_global=n_global, n_local=n_local, limit=limit)
    train_len = train_len or model_train_len(model) or ms.n_local
    if train_len is None:
        raise InvalidArgumentError(
            "the training length of the model is unknown; pass train_len=N (--train-len)"
        )
    patch = {**ms.patch(), "train_len": train_len}
    common = {"model": model_name(model), "length": length}
    stores = {}  # what a cell depends on: the baseline on its cap, a mode on the patch settings
    for label, mode, shuffled in plan:
        extra = {"control": control, "control_seed": control_seed} if shuffled else {}
        if mode == "baseline":
            extra["baseline_max_length"] = baseline_max_length
        elif mode == "recompute":
            extra.update({"train_len": train_len, "stride": recompute_stride or max(1, train_len // 4)})
        else:
            extra.update(patch)
        stores[label] = CellStore(run_dir, "ppl", {**common, **extra})
    windows: dict[str, Any] = {}
    shuffled_ids: dict[str, Any] = {}
    notes: list[str] = []
    for name, source in docs:
        ids, note = _window(tokenizer, source, length)
        if note is None:
            windows[name] = ids
            if control:
                shuffled_ids[name] = _control_window(tokenizer, source, length, control_seed)
        else:
            notes.append(note)
    digest = lambda ids: hashlib.sha1(ids.numpy().astype(np.int64).tobytes()).hexdigest()  # noqa: E731
    nll: dict[str, list[np.ndarray]] = {label: [] for label, _, _ in plan}
    costs: dict[str, list[dict]] = {}
    steps = Steps(progress, len(plan) * len(windows))
    for label, mode, shuffled in plan:
        cap = baseline_max_length if mode == "baseline" else None
        for name in windows:
            ids = shuffled_ids[name] if shuffled else windows[name]
            dig = digest(ids)
            key = f"{cell_name(label.replace(' (shuffled)', '-shuffled'))}_{cell_name(name)}"
            what = f"{label}: {name}, forward over {cap or length} tokens"
            cell = stores[label].load(key)
            if cell is not None and cell.get("window") == dig:  # the same tokens as then
                nll[label].append(np.asarray(cell["array"], dtype=np.float32))
                if "cost" in cell:
                    costs.setdefault(label, []).append(cell["cost"])
                steps.skip(what)
                continue
            start = time.perf_counter()
            meta: dict[str, Any] = {
                "document": name,
                "mode": label,
                "n_tokens": int(cap or length),
                "window": dig,
            }
            with steps.step(what):
                if mode == "recompute":
                    from lminf_diag.evaluate.recompute import recompute_nll

                    ref = recompute_nll(
                        model, ids.to(input_device(model)), train_len, stride=recompute_stride
                    )
                    row, meta["cost"] = ref.nll, ref.to_dict()
                    costs.setdefault(label, []).append(meta["cost"])
                else:
                    row = _nll_row(model, ids[:, :cap] if cap else ids, mode, length, patch)
            stores[label].save(key, meta, array=row, seconds=time.perf_counter() - start)
            nll[label].append(row)
    curves = {m: np.stack(v) if v else np.full((0, length), np.nan, np.float32) for m, v in nll.items()}
    labels = [label for label, _, _ in plan]
    capped = {label: (baseline_max_length if mode == "baseline" else None) for label, mode, _ in plan}
    from lminf_diag.data import list_books

    books = set(list_books())
    return DocumentPerplexityResult.build(
        labels=labels,
        train_len=train_len,
        length=length,
        documents=list(windows),
        nll=curves,
        capped_at=capped,
        notes=notes,
        smooth=smooth,
        costs={label: cost_text(c, length) for label, c in costs.items()},
        from_books=any(source in books for name, source in docs if name in windows),
    )


def cost_text(costs: list[dict], length: int) -> str:
    """What the recomputed reference cost over all documents, in words.

    >>> c = {"forward_tokens": 320, "seconds": 1.5, "stride": 4, "context_min": 13, "context_max": 16}
    >>> cost_text([c], 64)[:65]
    '320 forward tokens over 1 document(s) (5.00x one plain pass each)'
    """
    tokens = sum(int(c.get("forward_tokens", 0)) for c in costs)
    secs = sum(float(c.get("seconds", 0.0)) for c in costs)
    first = costs[0] if costs else {}
    ratio = tokens / max(1, length * len(costs))
    return (
        f"{tokens} forward tokens over {len(costs)} document(s) ({ratio:.2f}x one plain pass each), "
        f"{secs:.1f} s in all; stride {first.get('stride')}, "
        f"context {first.get('context_min')}-{first.get('context_max')} tokens"
    )


__all__ = ["DEFAULT_DOCUMENTS", "cost_text", "perplexity_over_documents", "resolve_documents"]
