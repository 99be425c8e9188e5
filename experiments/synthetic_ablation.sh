#!/usr/bin/env bash
# The miniature of the papers' ablation (TRAINING.md): train a tiny FG-CLIP from scratch on the synthetic
# fine-grained set with the global objective alone (stage1) and with the full fine-grained objective (stage2),
# for several seeds, and score both on the held-out FG-OVD-style file. Runs anywhere, no downloads.
#
#   experiments/synthetic_ablation.sh            # defaults below; OUT=dir SEEDS="1 2 3" EPOCHS=5 TRAIN=1000 to change
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/ablation}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-5}
TRAIN=${TRAIN:-1000}
TEST=${TEST:-150}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
BIN=${BIN:-target/release/fgclip}
[ -x "$BIN" ] || cargo build --release --locked -p fgclip-cli
DATA=$OUT/data
if [ ! -f "$DATA/train.json" ]; then
  "$BIN" synth --out "$DATA" --train "$TRAIN" --test "$TEST" --seed 0
fi
RESULTS=$OUT/results.tsv
: > "$RESULTS"
for seed in $SEEDS; do
  for preset in stage1 stage2; do
    run=$OUT/runs/$preset-seed$seed
    rm -rf "$run"
    start=$(date +%s)
    "$BIN" train --quiet \
      --set model.config="\"$DATA/tiny-model/config.json\"" --set model.tokenizer="\"$DATA/tiny-model\"" \
      --set data.train="[\"$DATA/train.json\"]" --set data.image_root="\"$DATA/images\"" \
      --set train.preset=$preset --set train.seed=$seed --set train.batch_size=$BATCH \
      --set train.epochs=$EPOCHS --set train.lr=$LR --set train.weight_decay=0.01 --set train.warmup_steps=10 \
      --set output.dir="\"$run\"" > /dev/null
    secs=$(( $(date +%s) - start ))
    acc=$("$BIN" eval-fgovd -m "$run/final" --data "$DATA/test_fgovd.jsonl" --images "$DATA/images" --json \
          | sed -n 's/.*"accuracy": *\([0-9.eE+-]*\).*/\1/p' | head -1)
    printf '%s\t%s\t%s\t%s\n' "$preset" "$seed" "$acc" "$secs" | tee -a "$RESULTS"
  done
done
echo
echo "objective	seeds	mean accuracy	std (population)	accuracies"
for preset in stage1 stage2; do
  awk -v p=$preset -F'\t' '$1==p {n++; s+=$3; q+=$3*$3; a=a sprintf("%.4f ", $3)}
    END {m=s/n; v=q/n-m*m; if (v<0) v=0; printf "%s\t%d\t%.4f\t%.4f\t%s\n", (p=="stage1"?"global only (stage1)":"full fine-grained (stage2)"), n, m, sqrt(v), a}' "$RESULTS"
done
