#!/usr/bin/env bash
# Arms of one preset trained side by side on the lent device, each from an empty work
# directory under the same wall-time budget, each tested on the same count of fresh
# plain-library images (issue 15's A/B runs). An arm is NAME or NAME:FIELD=VALUE[ FIELD=VALUE...];
# the arms share the card and its cores, so compare arms of one call only.
#   bash benchmarks/gpu_train_ab.sh lib36x4 380 10000 "base:hard_share=0" "hard:hard_symbols=O0 hard_share=0.15"
#   bash benchmarks/gpu_train_ab.sh lib36x4 440 10000 hard     # one arm: the preset alone
# Under $OUT/r: train_NAME.log, summary_NAME.json, model_NAME.json (the card), losses_NAME.png, walls.txt.
set -uo pipefail
preset=$1; budget=$2; tests=$3; shift 3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
out=${OUT:-/tmp/out}/r; mkdir -p "$out"; nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
arm() {
  local name=${1%%:*} sets=() kv; [[ $1 == *:* ]] && for kv in ${1#*:}; do sets+=(--set "$kv"); done
  local w=/tmp/w_$name s; s=$(date +%s); rm -rf "$w"
  python3 -m fcn_captcha.cli train --preset "$preset" --workdir "$w" --set time_budget="$budget" "${sets[@]}" \
      --test-count "$tests" 2>&1 | grep -v -E "cuda_timer|Delay kernel" > "$out/train_$name.log"
  echo "$name wall $(( $(date +%s) - s )) s" >> "$out/walls.txt"
  cp "$w/summary.json" "$out/summary_$name.json"; cp "$w/model/model.json" "$out/model_$name.json"
  cp "$w/losses.png" "$out/losses_$name.png"
}
for a in "$@"; do arm "$a" & done
wait
cat "$out/walls.txt"; for a in "$@"; do echo "== ${a%%:*}"; tail -6 "$out/train_${a%%:*}.log"; done
