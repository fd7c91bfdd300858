#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): kernel correctness on CUDA in fp32 and bf16, prefill
# plain/patched at 32k and 128k, capture cost at 32k, decoding latency and KV memory; one table.
# Fails at once (exit 3) without a CUDA device. About 10 minutes on one GPU.
#   bash benchmarks/gpu_check.sh [--quick] [--lengths 32768 131072]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch; this check needs one GPU. Nothing was run." >&2
  exit 3
fi
exec timeout 600 python benchmarks/gpu_check.py "$@"
