"""Task-level evaluations, baseline vs LM-Infinite modes: passkey retrieval and loss over documents.

run_passkey                 accuracy of retrieving a key hidden at a depth, per length and mode
perplexity_over_documents   per-token loss vs position, mean and spread over several documents
stream_loss                 per-token loss over a text of any length, chunked, in flat memory
run_sweep                   fluency and passkey retrieval over an (n_global x n_local) grid of one method
run_reach                   passkey accuracy against the needle's distance, past n_local

Both return AnalysisResult objects (summary(), to_frame(), figures()) and resume from a run folder.

Example:
    >>> from lminf_diag.evaluate import build_passkey_prompt, score_answer
    >>> score_answer("54321 is it", 54321)
    True
"""

from __future__ import annotations

from lminf_diag.evaluate.documents import DEFAULT_DOCUMENTS, perplexity_over_documents, resolve_documents
from lminf_diag.evaluate.documents_result import DocumentPerplexityResult
from lminf_diag.evaluate.methods_table import MethodsTable, methods_table
from lminf_diag.evaluate.passkey import (
    PasskeyPrompt,
    build_passkey_prompt,
    haystack_sentences,
    passkey_key,
    score_answer,
)
from lminf_diag.evaluate.passkey_run import PasskeyResult, PasskeyTrial, run_passkey
from lminf_diag.evaluate.reach import ReachResult, run_reach
from lminf_diag.evaluate.references import recompute_windows
from lminf_diag.evaluate.stream import stream_ids, stream_loss
from lminf_diag.evaluate.stream_result import StreamResult
from lminf_diag.evaluate.sweep import run_sweep
from lminf_diag.evaluate.sweep_result import SweepResult

__all__ = [
    "recompute_windows",
    "MethodsTable",
    "methods_table",
    "DEFAULT_DOCUMENTS",
    "DocumentPerplexityResult",
    "PasskeyPrompt",
    "PasskeyResult",
    "PasskeyTrial",
    "ReachResult",
    "SweepResult",
    "build_passkey_prompt",
    "haystack_sentences",
    "passkey_key",
    "perplexity_over_documents",
    "resolve_documents",
    "run_passkey",
    "run_reach",
    "run_sweep",
    "score_answer",
    "StreamResult",
    "stream_ids",
    "stream_loss",
]
