"""Route a model's attention through the one kernel, for the patch and the capture alike.

A `Router` is installed on a model the first time it is patched or captured and removed when
neither is active any more. It registers the kernel once with transformers' AttentionInterface
(or replaces the attention forward per module for ALiBi families that do not use the interface),
and keeps, per attention module, the layer index and its rotary table. What the kernel does is
decided at each call from `router.spec` (None = baseline) and `router.recorder` (None = no stats).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ..attention.explicit import release_workspace
from ..attention.kernel import attend
from ..attention.rotary import RotaryOps, ensure_gptj_table, hf_table
from ..attention.spec import FULL, LambdaSpec, Plan
from ..errors import InvalidArgumentError
from ..models.families import family_of
from .cache import bound_cache, key_positions
from .weights import check_weights_request, dense_weights, fresh_cache

IMPL_NAME = "lminf_diag"
_ROUTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> Router
# attention module -> (weakref to its Router, layer); weak both ways, or the value would keep its
# own key (the module, through router.layers) alive after a patched model is dropped
_MODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Router:
    """Per-model routing state; see the module docstring."""

    family: Any
    prev_impl: str | None
    layers: list  # attention modules, in layer order
    ropes: dict = field(default_factory=dict)  # id(module) -> RotaryOps | None
    spec: LambdaSpec | None = None
    recorder: Any = None  # capture recorder with .request(layer, n_q) -> StatsRequest | None
    hooks: list = field(default_factory=list)
    undo: list = field(default_factory=list)  # callables restoring replaced forwards / tables
    active_cache: Any = None  # the KV cache of the forward call in progress

    def positions(self, layer_idx: int | None, n_q: int, n_k: int, position_ids: torch.Tensor | None,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(q_pos, k_pos) of a call: true positions from a bounded cache, else contiguous keys
        ending at the last query position (full caches and sliding-window caches alike)."""
        kp = key_positions(self.active_cache, layer_idx, n_k)
        if kp is not None:
            return kp[n_k - n_q :], kp
        if position_ids is not None and position_ids.shape[-1] == n_q:
            q_pos = position_ids.reshape(-1, n_q)[0].to(device)
            end = int(q_pos[-1]) + 1
            return q_pos, torch.arange(end - n_k, end, device=device)
        k_pos = torch.arange(n_k, device=device)
        return k_pos[n_k - n_q :], k_pos

    def plan_for(self, module: torch.nn.Module, sliding_window: int | None, layer: int | None = None) -> Plan:
        """The kernel plan of `module` (layer index `layer`, for the top-k variant's first layer)."""
        if sliding_window:  # a layer trained with its own window keeps it
            return Plan(n_local=int(sliding_window), n_global=0)
        return FULL if self.spec is None else self.spec.plan(layer)


def lminf_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """AttentionInterface entry point: (B, H, N, D) in, ((B, N, H, Dv), weights) out; weights are
    None unless output_attentions=True (then (B, H, Nq, Nk), see `weights.dense_weights`)."""
    entry = _MODULES.get(module)
    router = entry[0]() if entry is not None else None
    if router is None:  # a module we did not route (should not happen): stock behaviour
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    layer = entry[1]
    q_pos, k_pos = router.positions(getattr(module, "layer_idx", layer), query.shape[2], key.shape[2],
                                    kwargs.get("position_ids"), query.device)
    plan = router.plan_for(module, kwargs.get("sliding_window"), layer)
    stats = router.recorder.request(layer, query.shape[2]) if router.recorder is not None else None
    out = attend(
        query,
        key,
        value,
        plan,
        scaling=module.scaling if scaling is None else scaling,
        q_pos=q_pos,
        k_pos=k_pos,
        rope=router.ropes.get(id(module)),
        softcap=kwargs.get("softcap"),
        stats=stats,
    )
    weights = None
    if kwargs.get("output_attentions"):  # the same plan once more, identity values: (B, H, Nq, Nk)
        weights = dense_weights(
            lambda eye: attend(query, key, eye, plan, scaling=module.scaling if scaling is None else scaling,
                               q_pos=q_pos, k_pos=k_pos, rope=router.ropes.get(id(module)),
                               softcap=kwargs.get("softcap")),
            key,
        )
    return out, weights


AttentionInterface.register(IMPL_NAME, lminf_attention)


def _get_path(root, path: str | None):
    obj = root
    for part in (path or "").split("."):
        if not part:
            continue
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if path else None


def _find_rotary(model, family):
    mod = _get_path(model, family.rotary_module)
    if mod is not None:
        return mod
    named = [(n, m) for n, m in model.named_modules() if n.endswith("rotary_emb")]
    return min(named, key=lambda nm: nm[0].count("."))[1] if named else None


def _attention_modules(model) -> list:
    mods = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    return sorted(mods, key=lambda m: m.layer_idx)


def _before_forward(model, args, kwargs):
    """Top-level pre-hook: refuse padded batches; bound a fresh KV cache under the patch (not with
    the top-k variant, whose last row reads the middle keys a bounded cache would drop)."""
    router = _ROUTERS.get(model)
    added = None
    if router is not None:
        check_weights_request(router.family.route, kwargs)
        spec = router.spec
        if spec is not None and spec.mode != "cap_only" and not spec.top_k:
            added = fresh_cache(model, kwargs)  # the cache the model would build itself, bounded below
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        router.active_cache = cache
        if cache is not None and spec is not None and spec.mode != "cap_only" and not spec.top_k:
            bound_cache(cache, len(router.layers), spec.n_global if spec.mode != "window" else 0, spec.n_local)
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 2 and not bool(mask.all()):
        raise InvalidArgumentError(
            "padded batches are not supported under the LM-Infinite patch or capture: the attention mask "
            "holds padding. Run each sequence on its own (batch size 1), or batch sequences of equal length "
            "without padding."
        )
    return (args, kwargs) if added is not None else None


def router_of(model: torch.nn.Module) -> Router | None:
    return _ROUTERS.get(model)


def install(model: torch.nn.Module) -> Router:
    """Route `model` through the kernel (idempotent); returns its Router."""
    router = _ROUTERS.get(model)
    if router is not None:
        return router
    family = family_of(model)
    if family.route == "module":
        from .alibi import install_alibi

        router = Router(family, None, [])
        install_alibi(model, router)
    else:
        router = Router(family, model.config._attn_implementation, _attention_modules(model))
        rotary = _bind_rotary(model, router)
        gptj = family.position == "rope_interleaved"
        if gptj and rotary is not None:
            original = rotary.embed_positions

            def extend(_mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
                pid = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
                if pid is not None and pid.numel():
                    ensure_gptj_table(rotary, int(pid.max()) + 1)

            router.hooks.append(rotary.register_forward_pre_hook(extend, with_kwargs=True))
            router.undo.append(lambda: setattr(rotary, "embed_positions", original))
        model.set_attn_implementation(IMPL_NAME)
    for i, module in enumerate(router.layers):
        _MODULES[module] = (weakref.ref(router), i)
    router.hooks.append(model.register_forward_pre_hook(_before_forward, with_kwargs=True))
    router.hooks.append(model.register_forward_hook(lambda *_: setattr(router, "active_cache", None)))
    _ROUTERS[model] = router
    return router


def _bind_rotary(model, router: Router):
    """Point each layer's rotary table at the model's current rotary module; returns that module."""
    rotary = _find_rotary(model, router.family)
    gptj = router.family.position == "rope_interleaved"
    router.ropes.clear()
    for module in router.layers:
        if rotary is not None:
            table = hf_table(rotary, getattr(module, "layer_type", None), gptj=gptj)
            router.ropes[id(module)] = RotaryOps(table, interleaved=gptj)
    return rotary


def rebind_rotary(model: torch.nn.Module) -> None:
    """After the model's rotary module was replaced (RoPE scaling methods), re-read it."""
    router = _ROUTERS.get(model)
    if router is not None and router.family.route != "module":
        _bind_rotary(model, router)


def uninstall(model: torch.nn.Module) -> None:
    """Undo `install` exactly: attention implementation, forwards, tables and hooks."""
    router = _ROUTERS.pop(model, None)
    if router is None:
        return
    try:
        for h in router.hooks:
            h.remove()
        for fn in reversed(router.undo):
            fn()
        if router.prev_impl is not None:
            model.set_attn_implementation(router.prev_impl)
    finally:
        for module in router.layers:
            _MODULES.pop(module, None)


def release_if_idle(model: torch.nn.Module) -> None:
    router = _ROUTERS.get(model)
    if router is not None and router.spec is None and router.recorder is None:
        uninstall(model)
        release_workspace()


