#!/usr/bin/env bash
# Does region search find things (SEARCH.md)? Train a tiny FG-CLIP from scratch on the synthetic fine-grained set
# with the full fine-grained objective (stage2), index the held-out images, and ask for every held-out object by
# its expression: region hit@1/5/10 against the global-only and random-candidate baselines, and image recall of
# the captions. Several seeds; no downloads.
#
#   experiments/search_quality.sh          # defaults below; OUT=dir SEEDS="1 2 3" EPOCHS=6 TRAIN=400 TEST=100
#   REGION_CONFIG=experiments/regions/segments.json experiments/search_quality.sh   # another candidate design
#
# Trained models are kept under $OUT/runs and reused (RETRAIN=1 trains again), so comparing candidate designs
# only re-indexes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/search-quality}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-6}
TRAIN=${TRAIN:-400}
TEST=${TEST:-100}
PRESET=${PRESET:-stage2}
BIN=${BIN:-target/release/fgclip}
[ -x "$BIN" ] || cargo build --release --locked -p fgclip-cli
DATA=$OUT/data
if [ ! -f "$DATA/test.json" ]; then
  "$BIN" synth --out "$DATA" --train "$TRAIN" --test "$TEST" --seed 0 > /dev/null
fi
DESIGN=$(basename "${REGION_CONFIG:-default}" .json)
RESULTS=$OUT/results-$DESIGN.jsonl
: > "$RESULTS"
for seed in $SEEDS; do
  run=$OUT/runs/$PRESET-seed$seed
  if [ ! -f "$run/final/config.json" ] || [ -n "${RETRAIN:-}" ]; then
  rm -rf "$run"
  "$BIN" train --quiet \
    --set model.config="\"$DATA/tiny-model/config.json\"" --set model.tokenizer="\"$DATA/tiny-model\"" \
    --set data.train="[\"$DATA/train.json\"]" --set data.image_root="\"$DATA/images\"" \
    --set train.preset=$PRESET --set train.seed=$seed --set train.batch_size=32 \
    --set train.epochs=$EPOCHS --set train.lr=1e-3 --set train.weight_decay=0.01 --set train.warmup_steps=10 \
    --set output.dir="\"$run\"" > /dev/null
  fi
  db=$run/index-$DESIGN.db
  rm -rf "$run/heldout" "$db"*
  # Only the held-out images go into the index.
  mkdir -p "$run/heldout"
  for f in "$DATA"/images/test_*.png; do ln -sf "$(realpath "$f")" "$run/heldout/"; done
  "$BIN" index "$run/heldout" -m "$run/final" --db "$db" ${REGION_CONFIG:+--region-config "$REGION_CONFIG"} \
    --json > "$run/index-$DESIGN.json"
  "$BIN" eval-search --data "$DATA/test.json" --images "$DATA/images" --db "$db" --seed "$seed" --json \
    | tr -d '\n ' \
    | sed "s/^/{\"preset\":\"$PRESET\",\"design\":\"$DESIGN\",\"seed\":$seed,\"report\":/; s/\$/}\n/" >> "$RESULTS"
  tail -n 1 "$RESULTS"
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def stat(key, k=None, scale=100):
    xs = [r["report"][key] if k is None else r["report"][key][k] for r in rows]
    return f"{scale*statistics.mean(xs):5.1f} ± {scale*(statistics.pstdev(xs) if len(xs) > 1 else 0):4.1f}"
print(f"design {rows[0]['design']}: {len(rows)} seeds, {rows[0]['report']['queries']} object queries over {rows[0]['report']['images']} held-out images")
print(f"{'':30} {'@1':>13} {'@5':>13} {'@10':>13}")
for name, key in [("region search", "region_hit"), ("global only (whole image)", "global_only_hit"), ("random box, right image", "random_box_hit"), ("random candidate, right image", "random_candidate_hit")]:
    print(f"{name:30} {stat(key,0):>13} {stat(key,1):>13} {stat(key,2):>13}")
print(f"{'image recall of captions':30} {stat('image_recall',0):>13} {stat('image_recall',1):>13}")
print(f"{'candidate recall (ceiling)':30} {stat('candidate_recall'):>13}")
print(f"{'in-image hit@1':30} {stat('in_image_hit1'):>13}")
print(f"{'regions per image':30} {stat('regions_per_image', scale=1):>13}")
PY
