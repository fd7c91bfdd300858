"""Per-token negative log-likelihood without the full logits tensor.

The base model gives the final (normed) hidden states; the LM head and the log-softmax are
applied chunk by chunk (16k tokens x 49k vocabulary would be 3.2 GB of logits at once).
"""

from __future__ import annotations

import numpy as np
import torch


def token_nll(model, input_ids: torch.Tensor, chunk: int = 1024) -> np.ndarray:
    """nll (N,) float32 with nll[0] = NaN and nll[t] = -log p(x_t | x_<t), for batch size 1.

    Example:
        >>> nll = token_nll(model, ids)        # doctest: +SKIP
    """
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    with torch.no_grad():
        hidden = model.base_model(input_ids=input_ids).last_hidden_state[0]  # (N, D)
        ids = input_ids[0].to(hidden.device)
        n = ids.shape[0]
        out = np.full(n, np.nan, dtype=np.float32)
        for a in range(0, n - 1, chunk):
            b = min(n - 1, a + chunk)
            logits = head(hidden[a:b].to(head.weight.device)).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            lp = torch.log_softmax(logits, -1)
            tgt = ids[a + 1 : b + 1].to(lp.device)
            out[a + 1 : b + 1] = (-lp.gather(-1, tgt[:, None])[:, 0]).cpu().numpy()
    return out
