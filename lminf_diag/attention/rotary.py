"""Rotary position helpers: undo a model's own rotation exactly and rotate to another position.

The attention interface hands the kernel q and k already rotated. To show a far key at the
capped distance, the kernel moves q from its true position to `limit` and the key to 0. It does
so with the model's own sin/cos table (the rotary module the model itself calls), first undoing
the rotation with the very same table and then rotating to the target: about 1e-7 error in fp32,
where one extra rotation by the difference would accumulate ~1e-3 at 15k positions.

Layouts: "half" (Llama and most models: pairs (i, i + r/2)) and "interleaved" (GPT-J: pairs
(2i, 2i + 1)). Partial rotary models rotate only the first `rotary_dim` features.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

# positions (N,) int64 -> (cos, sin), each (N, rotary_dim) float32, in the model's layout
Table = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


@dataclass
class RotaryOps:
    """Rotations of one layer, backed by the model's own sin/cos table.

    Example:
        >>> ops = RotaryOps.from_inv_freq(torch.tensor([1.0, 0.1]))
        >>> x = torch.randn(1, 1, 3, 4)
        >>> y = ops.move(x, torch.tensor([5, 6, 7]), 0)
        >>> torch.allclose(ops.move(y, torch.tensor([0, 0, 0]), torch.tensor([5, 6, 7])), x, atol=1e-5)
        True
    """

    table: Table
    interleaved: bool = False

    @classmethod
    def from_inv_freq(cls, inv_freq: torch.Tensor, interleaved: bool = False) -> RotaryOps:
        """A plain RoPE table from inverse frequencies (for tests and custom models)."""

        def table(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ang = pos.double()[:, None] * inv_freq.double().to(pos.device)[None, :]
            ang = ang.repeat_interleave(2, -1) if interleaved else torch.cat((ang, ang), -1)
            return ang.cos().float(), ang.sin().float()

        return cls(table, interleaved)

    def cos_sin(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table(pos)

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Rotate the first rotary_dim features of x (..., N, D) by (cos, sin) (N, r); fp32 out."""
        r = cos.shape[-1]
        x = x.float()
        xr, xp = x[..., :r], x[..., r:]
        rot = _rotate_every_two(xr) if self.interleaved else _rotate_half(xr)
        if inverse:
            # exact inverse of x*cos + rot(x)*sin, also for tables scaled by an attention factor
            y = (xr * cos - rot * sin) / (cos * cos + sin * sin)
        else:
            y = xr * cos + rot * sin
        return torch.cat((y, xp), dim=-1) if xp.shape[-1] else y

    def move(self, x: torch.Tensor, from_pos: torch.Tensor, to_pos: int | torch.Tensor) -> torch.Tensor:
        """Re-rotate x (..., N, D) from positions `from_pos` (N,) to `to_pos` (int or (N,))."""
        n = from_pos.shape[0]
        if not torch.is_tensor(to_pos) and to_pos == 0:  # the rotation at 0 is the identity times the table's scale
            cos, sin = self.table(torch.cat((from_pos, from_pos.new_zeros(1))))
            back = self.apply(x, cos[:n], sin[:n], inverse=True)
            back[..., : cos.shape[-1]] *= cos[n]
            return back
        to = torch.as_tensor(to_pos, device=from_pos.device).expand(n) if not torch.is_tensor(to_pos) or to_pos.ndim == 0 else to_pos
        cos, sin = self.table(torch.cat((from_pos, to.to(from_pos.dtype))))
        back = self.apply(x, cos[:n], sin[:n], inverse=True)
        return self.apply(back, cos[n:], sin[n:])


def _buffers(rotary_module: torch.nn.Module, layer_type: str | None):
    """(inv_freq, attention_scaling) the module holds now for `layer_type`, or None if it has none."""
    inv = getattr(rotary_module, f"{layer_type}_inv_freq", None) if layer_type else None
    scale = getattr(rotary_module, f"{layer_type}_attention_scaling", None) if layer_type else None
    inv = getattr(rotary_module, "inv_freq", None) if inv is None else inv
    scale = getattr(rotary_module, "attention_scaling", None) if scale is None else scale
    if not torch.is_tensor(inv) or scale is None:
        return None
    return inv, float(scale)


def hf_table(rotary_module: torch.nn.Module, layer_type: str | None = None, gptj: bool = False) -> Table:
    """Wrap a transformers rotary-embedding module (forward(x, position_ids[, layer_type])).

    For modules that keep `inv_freq` and `attention_scaling` (every RoPE family but GPT-J), the
    table is built from the values the module holds at call time, with the module's own formula
    (fp32 angles pos * inv_freq, cos/sin times attention_scaling): the kernel runs after the
    model's own rotary call, so a scaled or dynamic (NTK) table is read as the model used it, and
    never changed by the kernel (calling a dynamic module's forward would reset or grow it).

    Example:
        >>> from transformers import LlamaConfig
        >>> from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        >>> rot = LlamaRotaryEmbedding(LlamaConfig(hidden_size=16, num_attention_heads=2))
        >>> pos = torch.arange(5)
        >>> cos, sin = hf_table(rot)(pos)
        >>> want = rot(torch.zeros(1), pos[None])
        >>> torch.equal(cos, want[0][0]) and torch.equal(sin, want[1][0])
        True
    """
    takes_layer_type = "layer_type" in inspect.signature(rotary_module.forward).parameters

    def table(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        neg = pos < 0  # a rotation by -p is the rotation by p with the sine negated
        if bool(neg.any()):
            cos, sin = table(pos.abs())
            return cos, torch.where(neg[:, None], -sin, sin)
        held = None if gptj else _buffers(rotary_module, layer_type)
        if held is not None:
            inv, scale = held
            freqs = pos.to(inv.device)[:, None].float() * inv.float()[None, :]  # (N, r/2)
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * scale).to(pos.device), (emb.sin() * scale).to(pos.device)
        buf = next(iter(rotary_module.buffers()), None)
        device = buf.device if buf is not None else pos.device
        if gptj:
            ensure_gptj_table(rotary_module, int(pos.max()) + 1)
        x = torch.zeros(1, dtype=torch.float32, device=device)
        pid = pos.to(device)[None, :]
        out = rotary_module(x, pid, layer_type) if takes_layer_type and layer_type else rotary_module(x, pid)
        if gptj:
            sin, cos = out
            cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        else:
            cos, sin = out
        return cos[0].float().to(pos.device), sin[0].float().to(pos.device)

    return table


def ensure_gptj_table(rotary_module: torch.nn.Module, n_positions: int) -> None:
    """Extend GPT-J's sinusoidal table (it stops at max_position_embeddings) to n_positions."""
    table = rotary_module.embed_positions
    if table.shape[0] >= n_positions:
        return
    dim = table.shape[1]
    n = max(n_positions, 2 * table.shape[0])
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    ang = torch.arange(n, dtype=torch.int64).float()[:, None] * inv_freq
    new = torch.cat((torch.sin(ang), torch.cos(ang)), dim=1).to(table.device, table.dtype)
    rotary_module.embed_positions = new
