"""Decoding measurements: per-token latency and KV-cache memory as the context grows.

Greedy decoding with an explicit cache (the bounded LM-Infinite cache under the patch, the
model's ordinary cache otherwise), timing every step and reading the cache's size in bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache

from lminf_diag.devices import input_device

from ..analyze.base import AnalysisResult, label_colors, mark_train_len


def cache_bytes(cache) -> int:
    """Bytes held by the keys and values of a transformers cache."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()
    return total


@dataclass
class DecodingRun:
    """One label's decode: context length, seconds and cache bytes after each step."""

    label: str
    prefill_tokens: int
    prefill_seconds: float
    context: np.ndarray  # (S,) tokens in context after each step
    step_seconds: np.ndarray  # (S,)
    cache_mb: np.ndarray  # (S,)
    tokens: list[int] = field(default_factory=list)

    def to_cell(self) -> dict:
        """The run as a JSON-safe dict (a resumable cell); `from_cell` reads it back."""
        return {"prefill_tokens": self.prefill_tokens, "prefill_seconds": self.prefill_seconds,
                "context": self.context, "step_seconds": self.step_seconds, "cache_mb": self.cache_mb,
                "tokens": self.tokens}

    @classmethod
    def from_cell(cls, label: str, cell: dict) -> DecodingRun:
        return cls(label, int(cell["prefill_tokens"]), float(cell["prefill_seconds"]),
                   np.asarray(cell["context"], dtype=np.int64), np.asarray(cell["step_seconds"], dtype=np.float64),
                   np.asarray(cell["cache_mb"], dtype=np.float64), [int(t) for t in cell.get("tokens", [])])

    @property
    def ms_per_token(self) -> float:
        return float(np.median(self.step_seconds) * 1000) if len(self.step_seconds) else float("nan")


def decode(model, input_ids: torch.Tensor, new_tokens: int, *, patch: dict | None = None,
           label: str = "baseline") -> DecodingRun:
    """Prefill `input_ids` (1, N) then decode `new_tokens` greedily, timing each step.

    Example:
        >>> run = decode(model, ids, 16, patch=dict(n_global=10, n_local=2048))   # doctest: +SKIP
        >>> run.ms_per_token, run.cache_mb[-1]                                     # doctest: +SKIP
    """
    from ..patch.methods import applied

    settings = dict(patch or {})
    name = settings.pop("mode", "lambda") if patch else "baseline"  # a method name (run label)
    ids = input_ids.to(input_device(model))
    ctx = applied(model, name, target_len=int(ids.shape[1]) + int(new_tokens), **settings)
    steps, sizes, lengths, toks = [], [], [], []
    with ctx, torch.no_grad():
        cache = DynamicCache()
        t0 = time.perf_counter()
        try:
            out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        except TypeError:  # models without logits_to_keep
            out = model(ids, past_key_values=cache, use_cache=True)
        prefill = time.perf_counter() - t0
        for _ in range(new_tokens):
            tok = out.logits[:, -1:].argmax(-1)
            toks.append(int(tok))
            t0 = time.perf_counter()
            out = model(tok, past_key_values=cache, use_cache=True)
            steps.append(time.perf_counter() - t0)
            sizes.append(cache_bytes(cache) / 2**20)
            lengths.append(cache.get_seq_length())
    return DecodingRun(label, int(ids.shape[1]), prefill, np.asarray(lengths), np.asarray(steps),
                       np.asarray(sizes), toks)


@dataclass
class DecodingResult(AnalysisResult):
    """Decoding speed and cache memory per label (AnalysisResult protocol)."""

    runs: dict[str, list[DecodingRun]] = field(default_factory=dict)
    title: str = "Decoding speed and KV-cache memory"
    description: str = (
        "Per-token decoding latency and KV-cache size against context length. Under LM-Infinite the "
        "cache keeps only the first n_global and last n_local tokens, so both stay flat as the context grows."
    )

    def key_figures(self):
        """Per label, at its longest context: ms per decoded token (mean over the timed steps, with
        the t interval between steps; n = steps) and the KV-cache size after the last step (n = 1)."""
        from ..analyze.estimate import Estimate, estimate

        out = []
        for lab, runs in self.runs.items():
            last = max(runs, key=lambda r: r.prefill_tokens)
            ctx = int(last.context[-1]) if len(last.context) else last.prefill_tokens
            out.append(estimate(np.asarray(last.step_seconds) * 1000, figure=f"decode latency at {ctx} tokens",
                                label=lab, unit="ms per token"))
            mb = float(last.cache_mb[-1]) if len(last.cache_mb) else float("nan")
            out.append(Estimate(f"KV cache at {ctx} tokens", lab, mb, float("nan"), float("nan"), 1, "MB",
                                method="measured"))
        return out

    def findings(self) -> list[str]:
        """Latency and cache size of each patched run against the baseline's, from the measurements."""
        from ..analyze.names import display_name, sentence_start

        est = {(e.label, e.unit): e for e in self.key_figures()}
        base_t, base_m = est.get(("baseline", "ms per token")), est.get(("baseline", "MB"))
        lines = []
        for lab in self.runs:
            t, m = est[(lab, "ms per token")], est[(lab, "MB")]
            text = f"{sentence_start(display_name(lab))} decodes at {t.text(1)} ms per token; its KV cache holds {m.estimate:.0f} MB"
            if lab != "baseline" and base_t is not None and base_m is not None and base_m.estimate > 0:
                text += f" (baseline: {base_t.estimate:.1f} ms, {base_m.estimate:.0f} MB; {t.figure.split(' at ')[1]})"
            lines.append(text + ".")
        return lines

    def to_frame(self):
        import pandas as pd

        rows = [dict(label=lab, prefill_tokens=r.prefill_tokens, prefill_seconds=r.prefill_seconds,
                     ms_per_token=r.ms_per_token, cache_mb=float(r.cache_mb[-1]))
                for lab, runs in self.runs.items() for r in runs]
        return pd.DataFrame(rows)

    def figures(self):
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, subplot_titles=("latency per token", "KV-cache memory"))
        colors = label_colors(list(self.runs))
        for lab, runs in self.runs.items():
            runs = sorted(runs, key=lambda r: r.prefill_tokens)
            x = [r.prefill_tokens for r in runs]
            fig.add_scatter(x=x, y=[r.ms_per_token for r in runs], name=lab, line=dict(color=colors[lab]),
                            row=1, col=1)
            fig.add_scatter(x=x, y=[float(r.cache_mb[-1]) for r in runs], name=lab, showlegend=False,
                            line=dict(color=colors[lab]), row=1, col=2)
        fig.update_xaxes(title_text="context length (tokens)")
        fig.update_yaxes(title_text="ms per token", row=1, col=1)
        fig.update_yaxes(title_text="MB", row=1, col=2)
        mark_train_len(fig, self.train_len, n_axes=2)
        return [fig]
