"""The in-distribution reference on the same tokens: strided sliding re-computation.

Past the training length T a model reads positions and distances it never saw. The loss it
*would* give the same tokens in distribution is measured by re-encoding: every token t >= T is
predicted from (about) its last T tokens, fed as a fresh sequence with plain attention, so no
query sits past the training range. Tokens t < T keep their ordinary, full-context loss (one
pass over the first T tokens), so the reference's in-range loss equals the plain model's.

Strided: the targets past T are cut into chunks of `stride` tokens; one forward pass per chunk.

- ``context="in_range"`` (default): the pass reads the T tokens that end just before the chunk's
  last target, so every query position is < T (in distribution). The chunk's targets see between
  T - stride + 1 and T tokens of context; the last one exactly T.
- ``context="at_least_T"``: the pass reads the T tokens before the chunk plus the chunk (but its
  last token), so targets see between T and T + stride - 1 tokens; query positions then reach
  T + stride - 2, slightly past the training range.

``stride=1`` is exact in both: every token t >= T is predicted from exactly its last T tokens.
The default stride is T // 4: about 5 (N - T) + T forward tokens in all, against N for one plain
pass (the LM head runs on the kept rows only, `chunk` rows at a time, never N x vocab logits).
Passes of equal length are batched `batch` at a time. The result states its cost.

Example:
    >>> import torch, transformers as tf
    >>> cfg = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                      num_attention_heads=4, max_position_embeddings=16)
    >>> model = tf.LlamaForCausalLM(cfg).eval()
    >>> ids = torch.randint(0, 128, (1, 64), generator=torch.Generator().manual_seed(0))
    >>> r = recompute_nll(model, ids, train_len=16, stride=4)
    >>> r.nll.shape, (r.context_min, r.context_max), r.forward_passes
    ((64,), (13, 16), 13)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lminf_diag.devices import execution_device, input_device
from lminf_diag.errors import InvalidArgumentError
from lminf_diag.evaluate.cells import ProgressFactory, Steps

CONTEXTS = ("in_range", "at_least_T")


@dataclass
class RecomputeResult:
    """Per-token NLL (N,) float32 (nll[0] NaN) of the re-computed reference, and what it cost."""

    nll: np.ndarray
    train_len: int
    stride: int
    context: str
    context_min: int  # fewest context tokens of a target t >= T (0 when N <= T)
    context_max: int  # most context tokens of a target t >= T
    forward_passes: int
    forward_tokens: int  # input tokens over all passes (one plain pass reads N)
    seconds: float

    @property
    def n_tokens(self) -> int:
        return int(self.nll.size)

    def cost_text(self) -> str:
        """What it cost, e.g. '13 forward passes over 208 tokens (3.25x one plain pass), 0.1 s; stride 4,
        context 13-16 tokens'."""
        ratio = self.forward_tokens / max(1, self.n_tokens)
        return (
            f"{self.forward_passes} forward passes over {self.forward_tokens} tokens "
            f"({ratio:.2f}x one plain pass), {self.seconds:.1f} s; stride {self.stride}, "
            f"context {self.context_min}-{self.context_max} tokens"
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything but the NLL array (JSON-ready)."""
        d = asdict(self)
        d.pop("nll")
        return d


def _head_nll(model: Any, hidden: Any, targets: Any, chunk: int) -> Any:
    """(R,) float32 tensor: -log p(target | hidden row), LM head in chunks of `chunk` rows
    (the same head, soft-capping and log-softmax as `capture.nll.token_nll`)."""
    import torch

    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    out = []
    for a in range(0, hidden.shape[0], chunk):
        logits = head(hidden[a : a + chunk].to(execution_device(head, hidden.device))).float()  # (r, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        lp = torch.log_softmax(logits, -1)
        out.append(-lp.gather(-1, targets[a : a + chunk].to(lp.device)[:, None])[:, 0])
    return torch.cat(out).cpu()


def _check(model: Any, input_ids: Any, train_len: Any, stride: Any, context: str) -> tuple[int, int]:
    from lminf_diag.patch import current_spec

    if getattr(input_ids, "ndim", 0) != 2 or input_ids.shape[0] != 1:
        raise InvalidArgumentError(
            f"input_ids must be (1, N) token ids; got shape {tuple(getattr(input_ids, 'shape', ()))}"
        )
    if isinstance(train_len, bool) or not isinstance(train_len, int) or train_len < 2:
        raise InvalidArgumentError(f"train_len must be an integer >= 2 tokens, got {train_len!r}")
    stride = max(1, train_len // 4) if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= train_len:
        raise InvalidArgumentError(f"stride must be an integer in 1..train_len ({train_len}), got {stride!r}")
    if context not in CONTEXTS:
        raise InvalidArgumentError(f"context {context!r}; choose one of {', '.join(CONTEXTS)}")
    if current_spec(model) is not None:
        raise InvalidArgumentError(
            "recompute_nll needs the plain model (it is the in-distribution reference); call it outside "
            "lm_infinite(...) / after unpatch(model)"
        )
    return train_len, stride


def recompute_nll(
    model: Any,
    input_ids: Any,
    train_len: int,
    stride: int | None = None,
    progress: ProgressFactory | None = None,
    *,
    context: str = "in_range",
    batch: int = 8,
    chunk: int = 1024,
) -> RecomputeResult:
    """Each token t >= T predicted from (about) its last T tokens, re-encoded; tokens < T as usual.

    input_ids: (1, N) token ids. stride: targets per pass (default T // 4; 1 = exactly T tokens
    of context). context: "in_range" (default, targets see T - stride + 1 .. T tokens, every query
    position < T) or "at_least_T" (T .. T + stride - 1 tokens). progress: a factory such as
    `lminf_diag.cli.progress.Progress`, called with the number of batched passes.
    """
    import torch

    from lminf_diag.capture.nll import token_nll

    t_len, stride = _check(model, input_ids, train_len, stride, context)
    start = time.perf_counter()
    device = input_device(model)
    ids = input_ids.to(device)
    n = int(ids.shape[1])
    first = min(n, t_len)
    out = np.full(n, np.nan, dtype=np.float32)
    # (input start a, input end b, first target c, target end e): input ids[a:b], targets [c, e)
    plan = []
    for c in range(t_len, n, stride):
        e = min(c + stride, n)
        a = e - 1 - t_len if context == "in_range" else c - t_len
        plan.append((a, e - 1, c, e))
    groups: list[list[tuple[int, int, int, int]]] = []
    for p in plan:  # batch passes of equal input length
        if groups and len(groups[-1]) < batch and groups[-1][0][1] - groups[-1][0][0] == p[1] - p[0]:
            groups[-1].append(p)
        else:
            groups.append([p])
    steps = Steps(progress, 1 + len(groups))
    with steps.step(f"recompute: tokens 0..{first} (ordinary context)"):
        out[:first] = token_nll(model, ids[:, :first], chunk=chunk)
    tokens = first
    with torch.no_grad():
        for g in groups:
            what = (
                f"recompute: targets {g[0][2]}..{g[-1][3]} ({len(g)} pass(es) of {g[0][1] - g[0][0]} tokens)"
            )
            with steps.step(what):
                inputs = torch.cat([ids[:, a:b] for a, b, _, _ in g])  # (len(g), L)
                hidden = model.base_model(input_ids=inputs).last_hidden_state  # (len(g), L, D)
                rows = torch.cat([hidden[i, c - 1 - a : e - 1 - a] for i, (a, _, c, e) in enumerate(g)])
                targets = torch.cat([ids[0, c:e] for _, _, c, e in g])
                vals = _head_nll(model, rows, targets, chunk).numpy()
            k = 0
            for _, _, c, e in g:
                out[c:e] = vals[k : k + e - c]
                k += e - c
            tokens += sum(b - a for a, b, _, _ in g)
    ctx = [t - a for a, _, c, e in plan for t in (c, e - 1)]
    return RecomputeResult(
        nll=out,
        train_len=t_len,
        stride=stride,
        context=context,
        context_min=min(ctx) if ctx else 0,
        context_max=max(ctx) if ctx else 0,
        forward_passes=1 + len(plan),
        forward_tokens=int(tokens),
        seconds=round(time.perf_counter() - start, 3),
    )


__all__ = ["CONTEXTS", "RecomputeResult", "recompute_nll"]
