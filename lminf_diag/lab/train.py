"""Train the lab models: deterministic, seeded, CPU, a few minutes each.

Re-create the shipped weights (bit for bit with the same torch build and thread count; within
the tolerance stated in each model card otherwise)::

    python -m lminf_diag.lab.train --out lminf_diag/lab/weights            # every scheme and seed
    python -m lminf_diag.lab.train --out /tmp/lab --only lab-rope --steps 200

A model whose folder is already complete is skipped, so an interrupted run resumes with the
next model. Each folder is an ordinary Hugging Face model folder (config, safetensors weights,
byte-level tokenizer) plus ``lminf_diag.json`` (training length, recipe, losses, weight digest)
and a model card ``README.md``.

Example:
    >>> from lminf_diag.lab.specs import TrainSettings, lab_spec
    >>> run = train_model(lab_spec("lab-rope"), TrainSettings(steps=2, batch_size=2, warmup=1))
    >>> len(run.losses)
    2
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lminf_diag.lab.specs import HELD_OUT_BOOK, LAB_SPECS, LabSpec, TrainSettings, lab_names, lab_spec

LOG_EVERY = 10  # steps per entry of the loss curve
EXACT_STEPS = 20  # per-step losses recorded exactly, to check a re-run against


def corpus_ids(books: tuple[str, ...]) -> Any:
    """The training books as one long tensor of byte ids, joined by end-of-text tokens."""
    import torch

    from lminf_diag.data import load_text
    from lminf_diag.lab.tokenizer import N_BYTES, encode_bytes

    ids: list[int] = []
    for book in books:
        ids += encode_bytes(load_text(book)[0]) + [N_BYTES]
    return torch.tensor(ids, dtype=torch.long)


def held_out_windows(train_len: int, count: int = 64) -> Any:
    """`count` evenly spaced windows of the held-out book: BOS + ``train_len`` bytes, (count, L+1)."""
    import torch

    from lminf_diag.data import load_text
    from lminf_diag.lab.tokenizer import encode_bytes

    data = torch.tensor(encode_bytes(load_text(HELD_OUT_BOOK)[0]), dtype=torch.long)
    starts = torch.linspace(0, len(data) - train_len - 1, count).long()
    return with_bos(torch.stack([data[s : s + train_len] for s in starts.tolist()]))


def with_bos(windows: Any) -> Any:
    """Put the begin-of-text token (id 256) before each (count, n) window: (count, n + 1).

    Every training sequence starts with it, as the tokenizer's own encoding does, so the
    models have a fixed first token (an attention sink) like most pretrained LLMs.
    """
    import torch

    from lminf_diag.lab.tokenizer import N_BYTES

    return torch.cat([torch.full((windows.shape[0], 1), N_BYTES, dtype=windows.dtype), windows], 1)


def lr_at(step: int, s: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio``.

    >>> round(lr_at(0, TrainSettings(lr=1.0, warmup=10)), 2), lr_at(999, TrainSettings(lr=1.0)) > 0.1
    (0.1, True)
    """
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def weights_digest(model: Any) -> str:
    """sha256 over the parameters (sorted names, raw float32 bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class TrainRun:
    """A trained model with its loss record."""

    model: Any
    losses: list[float]  # every step's training loss (nats per byte)
    held_out_nll: float  # mean NLL on the held-out book at the training length
    seconds: float

    def curve(self) -> list[float]:
        """Mean loss over each block of `LOG_EVERY` steps."""
        return [
            round(sum(self.losses[i : i + LOG_EVERY]) / len(self.losses[i : i + LOG_EVERY]), 4)
            for i in range(0, len(self.losses), LOG_EVERY)
        ]

    def final_loss(self, last: int = 50) -> float:
        tail = self.losses[-last:]
        return sum(tail) / len(tail)


def evaluate_nll(model: Any, windows: Any) -> float:
    """Mean next-byte NLL over (count, L+1) windows."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = model(windows[:, :-1]).logits  # (count, L, V)
        return float(F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()))


def train_model(spec: LabSpec, settings: TrainSettings = TrainSettings(),
                progress: Callable[[str], None] | None = None, stop_after: int | None = None) -> TrainRun:
    """Train one lab model from scratch with `settings`; deterministic for a given torch build and threads.

    `stop_after` ends training early (the learning-rate schedule still follows ``settings.steps``),
    e.g. to check a re-run's first losses against a model card.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model = spec.build(train_len=settings.train_len)
    model.train()
    data = corpus_ids(settings.books)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.95))
    L, losses, t0 = settings.train_len, [], time.perf_counter()
    for step in range(settings.steps if stop_after is None else min(stop_after, settings.steps)):
        starts = torch.randint(0, len(data) - L, (settings.batch_size,), generator=gen)
        batch = with_bos(torch.stack([data[s : s + L] for s in starts.tolist()]))  # (B, L+1)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, settings)
        logits = model(batch[:, :-1]).logits  # (B, L, V)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and ((step + 1) % 50 == 0 or step + 1 == settings.steps):
            spent = time.perf_counter() - t0
            eta = spent / (step + 1) * (settings.steps - step - 1)
            recent = sum(losses[-50:]) / len(losses[-50:])
            progress(f"{spec.name}: step {step + 1}/{settings.steps}, loss {recent:.3f}, {eta:.0f} s left")
    model.eval()
    held = evaluate_nll(model, held_out_windows(L))
    return TrainRun(model=model, losses=losses, held_out_nll=held, seconds=time.perf_counter() - t0)


def is_trained(folder: Path) -> bool:
    """True when `folder` holds a finished lab model (weights, metadata and card)."""
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "lminf_diag.json",
                                                  "README.md", "tokenizer.json"))


def save_run(spec: LabSpec, settings: TrainSettings, run: TrainRun, folder: Path) -> Path:
    """Write the model folder atomically (built in a temporary folder, then renamed into place)."""
    import transformers
    from transformers.utils import logging as hf_logging

    from lminf_diag.lab.card import model_card
    from lminf_diag.lab.tokenizer import byte_tokenizer
    from lminf_diag.models.embedded import write_metadata
    from lminf_diag.util.atomic import atomic_dir

    hf_logging.disable_progress_bar()

    def build(tmp: Path) -> None:
        run.model.save_pretrained(tmp)
        byte_tokenizer().save_pretrained(tmp)
        meta = dict(
            train_len=settings.train_len, source="lab", name=spec.name, scheme=spec.scheme,
            model_class=spec.model_class, description=spec.description, settings=settings.to_dict(),
            n_params=sum(p.numel() for p in run.model.parameters()),
            final_loss=round(run.final_loss(), 4), held_out_nll=round(run.held_out_nll, 4),
            held_out_book=HELD_OUT_BOOK, first_losses=run.losses[:EXACT_STEPS], loss_curve=run.curve(),
            weights_sha256=weights_digest(run.model), seconds=round(run.seconds, 1),
            torch=__import__("torch").__version__, transformers=transformers.__version__,
        )
        write_metadata(tmp, **meta)
        (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
        for file in tmp.iterdir():
            file.chmod(0o644)  # readable by everyone, like any package data

    return atomic_dir(Path(folder), build)


def train_all(out: Path, names: list[str] | None = None, settings: TrainSettings = TrainSettings(),
              force: bool = False, progress: Callable[[str], None] | None = print) -> list[Path]:
    """Train the named lab models (default all) into ``out/<name>``, skipping finished ones."""
    done = []
    for spec in [lab_spec(n) for n in names] if names else LAB_SPECS:
        folder = Path(out) / spec.name
        if is_trained(folder) and not force:
            if progress:
                progress(f"{spec.name}: already trained in {folder}, skipped (--force retrains)")
            done.append(folder)
            continue
        seeded = replace(settings, seed=spec.seed)  # the seed is part of the model's identity
        run = train_model(spec, seeded, progress=progress)
        done.append(save_run(spec, seeded, run, folder))
        if progress:
            progress(f"{spec.name}: final loss {run.final_loss():.3f}, held-out {run.held_out_nll:.3f} "
                     f"nats/byte, {run.seconds:.0f} s -> {folder}")
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m lminf_diag.lab.train``: train the lab models."""
    parser = argparse.ArgumentParser(prog="python -m lminf_diag.lab.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write <name>/ model folders into")
    parser.add_argument("--only", nargs="+", choices=lab_names(), help="train only these models")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--threads", type=int, default=TrainSettings.threads,
                        help="CPU threads (part of what makes a re-run bit-identical; see each model card)")
    parser.add_argument("--force", action="store_true", help="retrain models whose folder is complete")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    settings = replace(TrainSettings(), steps=args.steps, threads=args.threads)
    train_all(args.out, args.only, settings, force=args.force,
              progress=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
