#!/usr/bin/env bash
# The real-data job on the lent GPU, end to end with the project's own commands:
#   1. (unless SYNTH_MODEL is given) fcn-captcha train --preset kaggle_synth: a detector
#      pretrained on synthetic lookalikes only, under a wall-time budget;
#   2. benchmarks/kaggle_curve.py: annotation quality on QUALITY synthetic images, then for
#      each size N: fcn-captcha annotate (forced alignment + self-training rounds) on the
#      first N training files and fcn-captcha train --preset kaggle_v2 on them, read on
#      the held-out split.
# Logs, curve JSON/PNG, annotation picture and the models (tarballs) go under $OUT.
# The real images must be inside the checkout (a git-ignored folder named in `carry`).
#   bash benchmarks/gpu_kaggle.sh .kaggle_data/captcha_images_v2 220 "639" 500
#   bash benchmarks/gpu_kaggle.sh .kaggle_data/captcha_images_v2 0 "25 50 100 200" 0 .kaggle_data/synth_model
set -euo pipefail
data=$1; budget=$2; sizes=$3; quality=${4:-0}; synth=${5:-}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/stage
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
filter() { grep -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn"; }
if [ -z "$synth" ]; then
  start=$(date +%s)
  python3 -m fcn_captcha.cli train --preset kaggle_synth --workdir /tmp/ks --set time_budget="$budget" \
      --test-count 0 2>&1 | filter | tee "$out/train_kaggle_synth.log"
  echo "kaggle_synth wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/train_kaggle_synth.log"
  synth=/tmp/ks/model
  cp /tmp/ks/losses.png /tmp/stage/losses_kaggle_synth.png
  tar -C /tmp/ks -czf "$out/model_kaggle_synth.tgz" model losses.csv summary.json
fi
python3 benchmarks/kaggle_curve.py "$data" --synth-model "$synth" --sizes $sizes --workdir /tmp/curve \
    --quality "$quality" --json "$out/curve.json" --plot "$out/curve.png" 2>&1 | filter | tee "$out/curve.log"
# at most 8 files come back: small results in one tarball, the largest run's models apart
cp "$out"/*.log "$out/curve.json" /tmp/stage/ 2>/dev/null || true
[ -f "$out/curve.png" ] && cp "$out/curve.png" /tmp/stage/
for d in /tmp/curve/n*; do
  n=$(basename "$d")
  cp "$d/centers.json" "/tmp/stage/centers_$n.json"
  [ -f "$d/centers.png" ] && cp "$d/centers.png" "/tmp/stage/centers_$n.png"
  cp "$d/run/losses.png" "/tmp/stage/losses_kaggle_v2_$n.png" 2>/dev/null || true
done
tar -C /tmp/stage -czf "$out/results.tgz" .
last=$(ls -d /tmp/curve/n* | sort -t n -k2 -n | tail -1)
tar -C "$last/run" -czf "$out/model_kaggle_v2.tgz" model losses.csv summary.json
tar -C "$last" -czf "$out/annotator.tgz" annotator
