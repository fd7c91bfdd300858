"""The lab: small causal LMs, one per position-encoding scheme and seed, and how they are trained.

All share width, depth, heads, vocabulary (bytes), data, schedule and block class: a pre-LayerNorm
block with a plain GELU MLP (4x width) and sequential residuals. Three schemes are one model class,
GPT-NeoX, differing only in ``rotary_pct``; ALiBi is not available in GPT-NeoX, so it uses Bloom,
whose block is the same (pre-LayerNorm, GELU MLP 4x, sequential residuals) plus a LayerNorm on
the embeddings. The scheme is thus the only thing that differs between them.

| name | model class | position scheme |
|---|---|---|
| ``lab-rope`` | GPT-NeoX | RoPE on the whole head (``rotary_pct=1``) |
| ``lab-alibi`` | Bloom | ALiBi linear biases |
| ``lab-partial`` | GPT-NeoX | RoPE on a quarter of each head (``rotary_pct=0.25``) |
| ``lab-nope`` | GPT-NeoX | none (``rotary_pct=0``): position only from the causal mask |

Each scheme is trained with ``SEEDS`` seeds (initialisation and data order): ``lab-rope`` is
seed 0, ``lab-rope-s1`` and ``lab-rope-s2`` the others. A lab run replicates over seeds, so a
reading is a property of the scheme, not of one training run.

Example:
    >>> [s.name for s in LAB_SPECS if s.seed == 0]
    ['lab-rope', 'lab-alibi', 'lab-partial', 'lab-nope']
    >>> lab_spec("lab-rope-s2").seed, lab_spec("lab-rope").build().config.model_type
    (2, 'gpt_neox')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lminf_diag.errors import InvalidArgumentError
from lminf_diag.lab.tokenizer import VOCAB_SIZE

HELD_OUT_BOOK = "carroll-alice"  # never trained on: the lab's analyses read it
TRAIN_BOOKS = ("bryant-stories", "burgess-busterbrown", "chesterton-thursday", "shakespeare-hamlet")


@dataclass(frozen=True)
class TrainSettings:
    """The training recipe shared by every lab model (CPU, fp32, deterministic given the seed)."""

    train_len: int = 128  # tokens (bytes) per training sequence: the models' training length
    batch_size: int = 32
    steps: int = 1000
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2  # CPU threads: part of what makes a re-run bit-identical
    books: tuple[str, ...] = TRAIN_BOOKS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["books"] = list(self.books)
        return data


@dataclass(frozen=True)
class Shape:
    """Model size shared by the lab: about 0.8 M parameters, 3.3 MB in float32."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    mlp: int = 512


@dataclass(frozen=True)
class LabSpec:
    """One lab model: its name, scheme and how to build its (untrained) transformers model."""

    name: str
    scheme: str  # rope | alibi | rope_partial | none
    model_class: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # initialisation and data order; the lab replicates schemes over seeds

    @property
    def base(self) -> str:
        """The seed-0 name of this scheme (``lab-rope`` for ``lab-rope-s2``)."""
        return self.name.split("-s")[0] if self.seed else self.name

    def config(self, shape: Shape = Shape(), train_len: int = TrainSettings.train_len) -> Any:
        """The transformers config of this model (ordinary model class, byte vocabulary)."""
        import transformers

        common = dict(vocab_size=VOCAB_SIZE, tie_word_embeddings=True, bos_token_id=256, eos_token_id=256,
                      pad_token_id=256)
        if self.model_class == "LlamaForCausalLM":
            return transformers.LlamaConfig(
                hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                num_key_value_heads=shape.heads, intermediate_size=shape.mlp * 2 // 3,
                max_position_embeddings=train_len, **self.options, **common)
        if self.model_class == "GPTNeoXForCausalLM":
            return transformers.GPTNeoXConfig(
                hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                intermediate_size=shape.mlp, max_position_embeddings=train_len,
                use_parallel_residual=False, **self.options, **common)
        if self.model_class == "BloomForCausalLM":
            return transformers.BloomConfig(hidden_size=shape.hidden, n_layer=shape.layers, n_head=shape.heads,
                                            **self.options, **common)
        raise InvalidArgumentError(f"unknown lab model class {self.model_class!r}")

    def build(self, shape: Shape = Shape(), train_len: int = TrainSettings.train_len) -> Any:
        """A freshly initialised model (seed it with ``torch.manual_seed`` first for determinism)."""
        import transformers

        cls = getattr(transformers, self.model_class)
        return cls(self.config(shape, train_len))


SEEDS = 3  # training seeds per scheme

_SCHEMES: tuple[LabSpec, ...] = (
    LabSpec("lab-rope", "rope", "GPTNeoXForCausalLM",
            "GPT-NeoX with RoPE on the whole head (rotary_pct 1, theta 10000)",
            {"rotary_pct": 1.0, "rope_theta": 10000.0}),
    LabSpec("lab-alibi", "alibi", "BloomForCausalLM", "Bloom with ALiBi linear attention biases"),
    LabSpec("lab-partial", "rope_partial", "GPTNeoXForCausalLM",
            "GPT-NeoX with RoPE on a quarter of each head (rotary_pct 0.25)", {"rotary_pct": 0.25}),
    LabSpec("lab-nope", "none", "GPTNeoXForCausalLM",
            "GPT-NeoX with no position encoding (rotary_pct 0): position only through the causal mask",
            {"rotary_pct": 0.0}),
)

LAB_SPECS: tuple[LabSpec, ...] = tuple(
    spec if seed == 0 else replace(spec, name=f"{spec.name}-s{seed}", seed=seed)
    for spec in _SCHEMES for seed in range(SEEDS)
)


def lab_names() -> list[str]:
    """The lab model names (every scheme and seed) in a fixed order.

    >>> lab_names()[:3]
    ['lab-rope', 'lab-rope-s1', 'lab-rope-s2']
    """
    return [s.name for s in LAB_SPECS]


def scheme_names() -> list[str]:
    """The seed-0 name of each scheme, in a fixed order.

    >>> scheme_names()
    ['lab-rope', 'lab-alibi', 'lab-partial', 'lab-nope']
    """
    return [s.name for s in _SCHEMES]


def lab_spec(name: str) -> LabSpec:
    """The spec of one lab model by name (clear error naming the lab otherwise).

    >>> lab_spec("lab-nope").scheme
    'none'
    """
    for spec in LAB_SPECS:
        if spec.name == name:
            return spec
    raise InvalidArgumentError(f"unknown lab model {name!r}; the lab has: {', '.join(lab_names())}")
