"""ALiBi families (MPT, Bloom) do not route attention through AttentionInterface, so their
attention forward is replaced per module (and restored on uninstall). The replacement computes
q, k, v with the module's own projections and cache, and calls the same kernel with the ALiBi
slopes: bias = -slope * distance, or -slope * limit for capped far keys (and -slope * top_k_distance
for the top-k middle keys of the variant, see `attention/middle.py`). It also lifts MPT's
`max_seq_len` limit, since the bias is computed per pair instead of sliced from a fixed table.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..attention.kernel import attend

if TYPE_CHECKING:
    from .router import Router


def _mpt_slopes(module, config) -> torch.Tensor:
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    table = build_mpt_alibi_tensor(module.n_heads, 2, config.attn_config.alibi_bias_max)  # (H, 1, 2)
    return (table[:, 0, 1] - table[:, 0, 0]).float()


def _mpt_forward(router, layer, slopes):
    def forward(self: torch.nn.Module, hidden_states: torch.Tensor, position_bias: torch.Tensor | None = None,
                cache: Any = None, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> tuple[torch.Tensor, None]:
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        b, n = hidden_states.shape[:2]
        qkv = self.Wqkv(hidden_states)
        if self.clip_qkv:
            qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
        q, k, v = (t.reshape(b, n, self.n_heads, self.head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=2))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        q_pos, k_pos = router.positions(self.layer_idx, n, k.shape[2], None, q.device)
        stats = router.recorder.request(layer, n) if router.recorder is not None else None
        out = attend(q, k, v, router.plan_for(self, None, layer), scaling=self.softmax_scale, q_pos=q_pos,
                     k_pos=k_pos, alibi=slopes.to(q.device), stats=stats)
        return self.out_proj(out.reshape(b, n, -1)), None

    return forward


def _bloom_forward(router, layer, slopes):
    from transformers.models.bloom.modeling_bloom import dropout_add

    def forward(self: torch.nn.Module, hidden_states: torch.Tensor, residual: torch.Tensor,
                alibi: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                layer_past: Any = None, use_cache: bool = False, output_attentions: bool = False,
                **kwargs: Any) -> tuple[torch.Tensor, None]:
        b, n, _ = hidden_states.shape
        q, k, v = self._reshape(self.query_key_value(hidden_states))
        cache = layer_past if layer_past is not None else kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        q_pos, k_pos = router.positions(self.layer_idx, n, k.shape[2], None, q.device)
        stats = router.recorder.request(layer, n) if router.recorder is not None else None
        out = attend(q, k, v, router.plan_for(self, None, layer), scaling=self.inv_norm_factor, q_pos=q_pos,
                     k_pos=k_pos, alibi=slopes.to(q.device), stats=stats)
        ctx = out.reshape(b, n, -1)
        output = F.linear(ctx, self.dense.weight, self.dense.bias)
        return dropout_add(output, residual, self.hidden_dropout, self.training), None

    return forward


def install_alibi(model: torch.nn.Module, router: Router) -> None:
    """Replace the attention forward of every MPT / Bloom attention module; record the undo."""
    mtype = model.config.model_type
    mods = [m for m in model.modules() if type(m).__name__ in ("MptAttention", "BloomAttention")]
    for i, module in enumerate(mods):
        if module.layer_idx is None:
            module.layer_idx = i
        if mtype == "mpt":
            fwd = _mpt_forward(router, i, _mpt_slopes(module, model.config))
        else:
            from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

            fwd = _bloom_forward(router, i, _get_alibi_slopes(module.num_heads, torch.device("cpu")).float())
        module.forward = types.MethodType(fwd, module)
        router.undo.append(lambda m=module: m.__dict__.pop("forward", None))
        router.layers.append(module)
