#!/usr/bin/env bash
# Indexing throughput against the model-only rate: `fgclip index` on folders of photo-like JPEGs (several sizes)
# next to `fgclip bench` on the same model, precision, batch and thread count, one after the other on this
# machine. Two model-only rates: the global embedding alone (`…-image`) and what indexing asks of the model, the
# global embedding plus the dense map from the same tower pass (`…-image-dense`). Random checkpoints at the released models' real sizes (nothing is downloaded). Appends JSON lines (with
# the CPU model and flags) to $OUT and prints the ratios index/bench per line. Indexing uses its defaults (large
# JPEGs decoded at a reduced size); FULL_DECODE=1 adds --full-decode.
#
#   bench/index_throughput.sh
#   N=48 SIZES="1600x1200" MODELS="fgclip-base" PRECISIONS="bf16" bench/index_throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-96}
SIZES=${SIZES:-"640x480 1600x1200 4032x3024"}
MODELS=${MODELS:-"fgclip-base fgclip2-base"}
PRECISIONS=${PRECISIONS:-"f32 bf16"}
BATCH=${BATCH:-16}
THREADS=${THREADS:-2}
SECONDS_EACH=${SECONDS_EACH:-15}
FIXTURES=${FGCLIP_FIXTURES:-../shared/fixtures}
WORK=${WORK:-target/index-bench}
OUT=${OUT:-bench/results-index-$(date +%Y%m%d-%H%M%S).jsonl}

cargo build --release -p fgclip-cli >&2
cargo build --release -p fgclip-search --example photo_folder >&2
FG=target/release/fgclip
mkdir -p "$WORK"
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
cpu_flags=$(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512_bf16|avx512_vnni|amx_bf16|asimd|sve)$' | tr '\n' ' ' | sed 's/ $//')

for size in $SIZES; do
  [ -d "$WORK/photos-$size" ] || target/release/examples/photo_folder "$WORK/photos-$size" "$N" "$size" >&2
done

for model in $MODELS; do
  ck="$WORK/ckpt-$model"
  if [ "$model" = fgclip-base ]; then
    wl=fgclip-base-image; wld=fgclip-base-image-dense; patches=""; tok="$FIXTURES/fgclip_v1/model"
  else
    wl=fgclip2-base-image-576; wld=fgclip2-base-image-dense-576; patches="--max-patches 576"; tok="$FIXTURES/fgclip2/model"
  fi
  if [ ! -f "$ck/model.safetensors" ]; then
    $FG bench --workload "$wl" --write-checkpoint "$ck" --tokenizer-from "$tok" >&2
    if [ "$model" = fgclip-base ]; then
      # The tiny fixture's preprocessor works at 112 px; the real model at 224.
      sed -i 's/: 112/: 224/' "$ck/preprocessor_config.json"
    fi
  fi
  for p in $PRECISIONS; do
    bench=$($FG bench --workload "$wl" --batch "$BATCH" --threads "$THREADS" --seconds "$SECONDS_EACH" --precision "$p" --json)
    for size in $SIZES; do
      rm -f "$WORK"/db*
      # This machine's speed drifts by several percent over minutes: the dense rate is measured right before and
      # right after each indexing run, and the index is compared with their mean.
      before=$($FG bench --workload "$wld" --batch "$BATCH" --threads "$THREADS" --seconds "$SECONDS_EACH" --precision "$p" --json)
      idx=$(RAYON_NUM_THREADS=$THREADS $FG index "$WORK/photos-$size" --db "$WORK/db" --model "$ck" --precision "$p" \
        --batch "$BATCH" $patches ${FULL_DECODE:+--full-decode} --json 2>/dev/null)
      after=$($FG bench --workload "$wld" --batch "$BATCH" --threads "$THREADS" --seconds "$SECONDS_EACH" --precision "$p" --json)
      python3 - "$model" "$p" "$size" "$bench" "$before" "$after" "$idx" "$cpu_model" "$cpu_flags" "$THREADS" "$BATCH" <<'EOF' | tee -a "$OUT"
import json, os, sys
model, p, size, bench, before, after, idx, cpu_model, flags, threads, batch = sys.argv[1:]
bench, before, after, idx = json.loads(bench), json.loads(before), json.loads(after), json.loads(idx)
dense = (before["items_per_s"] + after["items_per_s"]) / 2
ratio = idx["images_per_second"] / bench["items_per_s"]
ratio_dense = idx["images_per_second"] / dense
# Work per image (process CPU time, all threads): steady when the machine's speed drifts, unlike the rates.
cpu_dense = (before["cpu_seconds_per_item"] + after["cpu_seconds_per_item"]) / 2
cpu_ratio = cpu_dense / idx["cpu_seconds_per_image"]
print(json.dumps({"what": "index-throughput", "decode": "full" if os.environ.get("FULL_DECODE") else "reduced", "model": model, "precision": p, "photo_size": size,
                  "threads": int(threads), "batch": int(batch), "images": idx["encoded"],
                  "index_images_per_s": round(idx["images_per_second"], 3),
                  "bench_images_per_s": round(bench["items_per_s"], 3), "ratio": round(ratio, 3),
                  "bench_dense_images_per_s": round(dense, 3), "ratio_vs_dense": round(ratio_dense, 3),
                  "bench_dense_before_after": [round(before["items_per_s"], 3), round(after["items_per_s"], 3)],
                  "cpu_s_per_image_index": round(idx["cpu_seconds_per_image"], 4),
                  "cpu_s_per_image_dense": round(cpu_dense, 4), "cpu_ratio_dense_over_index": round(cpu_ratio, 3),
                  "index_threads_busy": round(idx["cpu_seconds_per_image"] * idx["images_per_second"], 2),
                  "regions": idx["regions"], "bytes_per_image": idx["bytes_per_image"],
                  "cpu": cpu_model, "flags": flags}))
EOF
    done
  done
done
echo "raw results: $OUT" >&2
