#!/usr/bin/env bash
# Side-by-side CPU benchmark: fgclip-rs (f32 and bf16-GEMM modes) against PyTorch and ONNX Runtime running the
# same architectures with random weights at the real sizes, one after another on this machine with the same
# thread count. Prints a markdown table (ratios = ours / peer) and keeps the raw JSON lines.
#
#   bench/run.sh                         # every workload, batch 1 and 16, 2 threads, 10 s each
#   THREADS=2 SECONDS_EACH=5 BATCHES="1" WORKLOADS="fgclip-base-image" TRAIN_WORKLOADS="" bench/run.sh
#   WORKLOADS="" TRAIN_BATCHES="8" bench/run.sh   # only the training step (FG-CLIP-base, f32, vs PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
SECONDS_EACH=${SECONDS_EACH:-10}
BATCHES=${BATCHES-"1 16"}
WORKLOADS=${WORKLOADS-"fgclip-base-image fgclip-large-image fgclip-base-text-77 fgclip-base-text-248 fgclip2-base-image-256 fgclip2-base-image-576 fgclip2-base-image-1024 fgclip2-base-text-64 fgclip2-base-text-196"}
PEERS=${PEERS:-"torch ort"}
# Training steps (f32, against PyTorch only): TRAIN_WORKLOADS="" skips them.
TRAIN_WORKLOADS=${TRAIN_WORKLOADS-"train-fgclip-base"}
TRAIN_BATCHES=${TRAIN_BATCHES:-"8"}
OUT=${OUT:-bench/results-$(date +%Y%m%d-%H%M%S).jsonl}

cargo build --release -p fgclip-cli >&2
bash bench/setup_peer.sh >&2
PY=bench/.venv/bin/python
: > "$OUT"
for w in $WORKLOADS; do
  for b in $BATCHES; do
    for dt in f32 bf16; do
      target/release/fgclip bench --workload "$w" --batch "$b" --threads "$THREADS" --seconds "$SECONDS_EACH" --precision "$dt" --json >> "$OUT"
    done
    for p in $PEERS; do
      OMP_NUM_THREADS=$THREADS $PY bench/peer.py --workload "$w" --impl "$p" --batch "$b" --threads "$THREADS" --seconds "$SECONDS_EACH" --json >> "$OUT" || true
    done
  done
done
for w in $TRAIN_WORKLOADS; do
  for b in $TRAIN_BATCHES; do
    target/release/fgclip bench --workload "$w" --batch "$b" --threads "$THREADS" --seconds "$SECONDS_EACH" --precision f32 --json >> "$OUT"
    OMP_NUM_THREADS=$THREADS $PY bench/peer.py --workload "$w" --impl torch --batch "$b" --threads "$THREADS" --seconds "$SECONDS_EACH" --json >> "$OUT" || true
  done
done
for w in preprocess-fgclip-640x480 preprocess-fgclip2-640x480; do
  target/release/fgclip bench --workload "$w" --batch 1 --threads 1 --seconds "$SECONDS_EACH" --json >> "$OUT"
done
python3 bench/table.py "$OUT"
echo "raw results: $OUT" >&2
