"""The GPU check: correctness of the kernel on CUDA and the costs that matter on a GPU, one table.

    python benchmarks/gpu_check.py [--lengths 32768 131072] [--quick]

Rows (each with its measured value and what it is checked against):
- kernel vs the dense float64 reference (`tests/reference.py`) on a tiny model, fp32 and bf16,
  for plain causal and LM-Infinite attention: max |logit difference| (fp32 < 1e-3, bf16 < 0.1);
- prefill time plain / patched on the embedded model at each length (plain is skipped where it
  would not fit);
- capture cost: a patched forward with statistics over a patched forward without, at 32k;
- decoding: ms per token and KV cache MB, plain and patched, at each length.

It fails at once, with a clear message and exit code 3, when no CUDA device is present. Budget:
about 10 minutes on one GPU at the default lengths (`--quick` for a shorter run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NO_CUDA = 3


def require_cuda() -> None:
    """Exit with code 3 and one line when there is no CUDA device (before loading anything heavy)."""
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, cuda build {torch.version.cuda}); "
              "this check needs one GPU. Nothing was run.", file=sys.stderr)
        sys.exit(NO_CUDA)


def _sync():
    import torch

    torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync()
    return (time.perf_counter() - t0) / repeat


def kernel_rows(rows: list) -> None:
    """Tiny model on CUDA, through the kernel vs the dense reference, fp32 and bf16."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lminf_diag import lm_infinite
    from lminf_diag.patch import through_kernel
    from tests.reference import configure
    from tests.tiny import rope_info, tiny_model

    ids = torch.randint(3, 128, (1, 300), generator=torch.Generator().manual_seed(0)).cuda()
    for dtype, tol in ((torch.float32, 1e-3), (torch.bfloat16, 0.1)):
        model = tiny_model("llama").to("cuda", dtype)
        for mode in (None, "lambda"):
            configure(mode=mode, n_local=32, n_global=4, limit=32, rope=rope_info(model))
            prev = model.config._attn_implementation
            model.set_attn_implementation("lminf_test_reference")
            with torch.no_grad():
                ref = model(ids, use_cache=False).logits.float()
            model.set_attn_implementation(prev)
            configure()
            ctx = lm_infinite(model, n_global=4, n_local=32) if mode else through_kernel(model)
            with torch.no_grad(), ctx:
                out = model(ids, use_cache=False).logits.float()
            err = (out - ref).abs().max().item()
            name = str(dtype).removeprefix("torch.")
            rows.append((f"kernel vs dense reference, {mode or 'plain'}, {name}", f"{err:.2e}",
                         f"< {tol:g}", "ok" if err < tol else "FAIL"))


def model_rows(rows: list, lengths: list[int], plain_max: int) -> None:
    """Prefill, capture cost and decoding on the embedded model."""
    import torch

    from lminf_diag import lm_infinite, load_model
    from lminf_diag.capture import recorder
    from lminf_diag.data import load_text, token_window
    from lminf_diag.evaluate.decoding import decode

    capture = getattr(recorder, "record", None) or recorder.capture
    model, tok = load_model("smollm2-135m", device="cuda", dtype="bfloat16")
    text, _ = load_text("chesterton-thursday")
    for n in lengths:
        ids = token_window(tok, text, n, repeat=True).cuda()

        def patched(ids=ids):
            with torch.no_grad(), lm_infinite(model, n_global=10):
                model.model(ids)

        def plain(ids=ids):
            with torch.no_grad():
                model.model(ids)

        tp = timed(patched)
        if n <= plain_max:
            tb = timed(plain)
            rows.append((f"prefill {n:,} tokens, plain / patched", f"{tb:.2f} s / {tp:.2f} s", "", f"{tb / tp:.2f}x"))
        else:
            rows.append((f"prefill {n:,} tokens, patched (plain skipped)", f"{tp:.2f} s", "", ""))
        if n == lengths[0]:
            def captured(ids=ids, n=n):
                with torch.no_grad(), lm_infinite(model, n_global=10), capture(model, stride=max(1, n // 256)):
                    model.model(ids)

            tc = timed(captured)
            rows.append((f"capture cost at {n:,} (with stats / without)", f"{tc:.2f} s / {tp:.2f} s", "",
                         f"{tc / tp:.2f}x"))
        lam = decode(model, ids.cpu(), 16, patch=dict(n_global=10), label="lambda")
        cell = f"{lam.ms_per_token:.1f} ms, KV {float(lam.cache_mb[-1]):.0f} MB"
        if n <= plain_max:
            base = decode(model, ids.cpu(), 16)
            rows.append((f"decode at {n:,}, plain | patched", f"{base.ms_per_token:.1f} ms, KV "
                         f"{float(base.cache_mb[-1]):.0f} MB | {cell}", "", ""))
        else:
            rows.append((f"decode at {n:,}, patched", cell, "", ""))
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--plain-max", type=int, default=131072, help="skip the plain model above this length")
    ap.add_argument("--quick", action="store_true", help="kernel correctness and 8k only")
    args = ap.parse_args()
    require_cuda()
    import torch

    rows: list = []
    t0 = time.perf_counter()
    kernel_rows(rows)
    model_rows(rows, [8192] if args.quick else args.lengths, args.plain_max)
    print(f"GPU check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"{time.perf_counter() - t0:.0f} s")
    widths = [max(len(str(r[i])) for r in rows + [("check", "value", "bound", "result")]) for i in range(4)]
    for r in [("check", "value", "bound", "result"), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 1 if any(r[3] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
