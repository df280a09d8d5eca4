#!/usr/bin/env bash
# One whole GPU job on the lent device: install the carried captcha wheel, train PRESET
# from an empty work directory (data generation included) under a wall-time budget,
# calibrate, test on fresh plain-library images, and put log, figures and the model
# (as a tarball) under $OUT.
#   bash benchmarks/gpu_train.sh lib36x4 450 10000 [FIELD=VALUE ...]
# DEVICES=N trains on the first N GPUs (config field devices: a stage's candidates spread
# over them, the last stage data parallel; fcn_captcha/sharding.py); unset: every GPU
# the machine shows. With DEVICES set, the files under $OUT end in _<N>gpu.
#   DEVICES=2 bash benchmarks/gpu_train.sh lib36x4 500 10000
set -euo pipefail
preset=$1; budget=$2; tests=$3; shift 3
sets=(); for kv in "$@"; do sets+=(--set "$kv"); done
tag=""
if [[ -n "${DEVICES:-}" ]]; then sets+=(--set "devices=$DEVICES"); tag="_${DEVICES}gpu"; fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
out=${OUT:-/tmp/out}; mkdir -p "$out"
work=/tmp/work_$preset$tag; rm -rf "$work"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
start=$(date +%s.%N)
python3 -m fcn_captcha.cli train --preset "$preset" --workdir "$work" --set time_budget="$budget" \
    "${sets[@]}" --test-count "$tests" 2>&1 | grep -v -E "cuda_timer|Delay kernel" | tee "$out/train_$preset$tag.log"
end=$(date +%s.%N)
python3 - "$start" "$end" "$work" "$out" "$preset$tag" <<'PY'
import json, sys
start, end, work, out, preset = sys.argv[1:]
s = json.load(open(f"{work}/summary.json"))
m = json.load(open(f"{work}/model/model.json"))
s["wall_seconds_train_and_test"] = float(end) - float(start)
s["tests"] = m["info"].get("tests", [])
json.dump(s, open(f"{out}/summary_{preset}.json", "w"), indent=1)
print(json.dumps({k: s.get(k) for k in ("devices", "wall_seconds_train_and_test", "total_seconds", "data_seconds",
                                         "train_seconds", "tests")}, indent=1))
PY
cp "$work/losses.png" "$out/losses_$preset$tag.png"
tar -C "$work" -czf "$out/model_$preset$tag.tgz" model losses.csv
