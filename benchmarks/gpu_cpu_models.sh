#!/usr/bin/env bash
# The CPU models (issue 14, part 2) on the lent GPU, with the project's own commands: a
# `slim` network (1/9 of `wide`'s FLOPs) distilled from each shipped full model.
#   bash benchmarks/gpu_cpu_models.sh BUDGET [INIT_DIR] [KAGGLE_DIR]
# lib36x4-cpu and lib36var-cpu: `fcn-captcha train --preset P --set arch=slim --set teacher=P`
# under BUDGET seconds each (the restart schedule from scratch), tested on 10,000 fresh
# plain-library images. With INIT_DIR (holding lib36x4-cpu/ and lib36var-cpu/ from an
# earlier run of this script), each instead continues from that model: one candidate,
# fresh images (seed $SEED, default 1), the step size decaying to 0 over the whole stage
# (fcn_captcha/pretrained as INIT_DIR continues the shipped ones).
# CPU_ONLY="lib36var" trains only those of the two (default both).
# With KAGGLE_DIR (the real "CAPTCHA Images v2" folder, carried): kaggle_v2-cpu, the
# shipped kaggle_v2 giving both the centers (`fcn-captcha annotate --rounds 0`: forced
# alignment of the labels, training split only) and the teacher's maps, then
# `train --preset kaggle_v2` on the 639 training files, read on the 161 held-out ones.
# The jobs share the GPU (memory split between them). Logs, summaries and models under $OUT.
set -euo pipefail
budget=$1; init=${2:-}; kaggle=${3:-}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/stage
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
filter() { grep -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn|^generate|step [0-9]+/"; }
lib() {  # preset
  local p=$1 sets=(--set arch=slim --set "teacher=$1" --set "name=$1-cpu" --set "time_budget=$budget")
  if [ -n "$init" ]; then
    sets+=(--init "$init/$1-cpu" --set "seed=${SEED:-1}" --set train_size=100000 --set stage_runs=1
           --set stage_epochs=40 --set lr_decay=1.0)
  fi
  local start; start=$(date +%s)
  python3 -m fcn_captcha.cli train --preset "$p" --workdir "/tmp/w_$p" "${sets[@]}" --test-count 10000 \
      2>&1 | filter > "/tmp/stage/train_$p-cpu.log"
  echo "wall seconds (data, training, calibration, test): $(( $(date +%s) - start ))" >> "/tmp/stage/train_$p-cpu.log"
  cp "/tmp/w_$p/losses.png" "/tmp/stage/losses_$p-cpu.png"
  cp "/tmp/w_$p/summary.json" "/tmp/stage/summary_$p-cpu.json"
  tar -C "/tmp/w_$p" -czf "$out/model_$p-cpu.tgz" model losses.csv summary.json
}
kag() {
  local start; start=$(date +%s)
  python3 -m fcn_captcha.cli annotate --model kaggle_v2 --data "$kaggle" --out /tmp/kcenters.json --rounds 0 \
      2>&1 | filter > /tmp/stage/train_kaggle_v2-cpu.log
  python3 -m fcn_captcha.cli train --preset kaggle_v2 --workdir /tmp/w_kaggle --data "$kaggle" \
      --centers /tmp/kcenters.json --set arch=slim --set teacher=kaggle_v2 --set name=kaggle_v2-cpu \
      --set epoch_images=1024000 --set lr_decay=0.5 --test-count 0 2>&1 | filter >> /tmp/stage/train_kaggle_v2-cpu.log
  echo "wall seconds (annotation, data, training, calibration, test): $(( $(date +%s) - start ))" \
      >> /tmp/stage/train_kaggle_v2-cpu.log
  cp /tmp/w_kaggle/losses.png /tmp/stage/losses_kaggle_v2-cpu.png
  tar -C /tmp/w_kaggle -czf "$out/model_kaggle_v2-cpu.tgz" model losses.csv summary.json
}
for p in ${CPU_ONLY:-lib36x4 lib36var}; do lib "$p" & done
if [ -n "$kaggle" ]; then kag & fi
wait
tail -n 6 /tmp/stage/train_*.log
tar -C /tmp/stage -czf "$out/logs.tgz" .
