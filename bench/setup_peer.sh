#!/usr/bin/env bash
# setup_peer.sh [VENV_DIR]  --  virtual environment for bench/peer.py (PyTorch + transformers + ONNX Runtime peer)
#
# Default VENV_DIR: bench/.venv. Idempotent: exits at once when VENV_DIR already holds the exact package set of
# bench/requirements-peer.txt (a stamp with that file's hash) and the packages import. Override the interpreter
# with PYTHON=/path/to/python3 (the pins were verified on CPython 3.11, Linux x86_64).
#
# What was found about installing torch for CPU from PyPI only (no pytorch.org index reachable here), 2026-11-24,
# torch 2.15.0 (the PyPI Linux x86_64 wheel is the CUDA 13.2 build, "2.15.0+cu132"; there is no CPU-only wheel):
#   * `pip install torch` (all dependencies): 5.3 GB venv, 82 s with a warm pip cache. Of that: triton ~1.0 GB,
#     nvidia-* CUDA libraries ~3.0 GB (cuDNN 0.85 GB, cuBLAS etc. 1.5 GB, NCCL 0.24 GB, cuSPARSELt 0.22 GB,
#     NVSHMEM 0.19 GB), torch itself 1.2 GB.
#   * `pip install --no-deps torch` (+ its pure-Python deps): `import torch` FAILS:
#     "OSError: libcudart.so.13: cannot open shared object file" then "ValueError: libcublasLt.so.*[0-9] not
#     found". libtorch_cpu.so itself has DT_NEEDED libcudart.so.13 and libcupti.so.13, libtorch_cuda.so (loaded
#     by libtorch.so unconditionally) needs cuBLAS/cuBLASLt/cuDNN/cuFFT/cuFile/cuSPARSE/cuSPARSELt/NCCL/NVRTC,
#     libtorch_nvshmem.so needs NVSHMEM, cuSPARSE needs nvJitLink, libtorch_cuda_linalg needs cuSOLVER.
#   * Lightest working install (what this script does): torch --no-deps + exactly those 13 nvidia-* wheels
#     (pinned to the versions torch 2.15.0 requires) + the pure-Python deps; no triton, no cuda-bindings,
#     no cuda-toolkit meta package, no nvidia-cuda-cccl. `import torch` works, torch.cuda.is_available() is
#     False, CPU kernels (MKL, oneDNN, AVX-512) are the same binary as the full install.
#     Cost: ~4.7 GB venv including transformers/onnx/onnxruntime/onnxscript; ~1.5-2 min with a warm pip
#     cache, download ~2.7 GB on a cold one (~1 min more at ~45 MB/s). `pip check` then reports the omitted
#     triton/cuda-* requirements; that is expected.
#   * Not done: stub libcudart/cuBLAS/... shared objects would shrink it to ~1.5 GB but are fragile.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$HERE/.venv}"
REQ="$HERE/requirements-peer.txt"
STAMP="$VENV/.fgclip-peer-stamp"
PY="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
smoke='import torch, onnxruntime, onnx, onnxscript, numpy, transformers
from transformers import CLIPVisionModelWithProjection, CLIPTextModelWithProjection, Siglip2VisionModel, Siglip2TextModel
x = torch.randn(8, 8)
assert torch.isfinite(x @ x).all()
print("peer venv ok: torch", torch.__version__, "| transformers", transformers.__version__,
      "| onnxruntime", onnxruntime.__version__, "| onnx", onnx.__version__, "| numpy", numpy.__version__)'

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$VENV/bin/python" -c "$smoke" 2>/dev/null; then
    echo "setup_peer: $VENV is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup_peer: creating venv $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
# --no-deps: the requirement file is the complete, pinned set (keeps pip from pulling triton / cuda-toolkit).
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -r "$REQ"
"$VENV/bin/python" -W ignore -c "$smoke"
echo "$want" > "$STAMP"
echo "setup_peer: done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
