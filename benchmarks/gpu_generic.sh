#!/usr/bin/env bash
# Train the shipped generic priors on the lent GPU: `generic` (wide network) and
# `generic-cpu` (cpu network), both from an empty work directory with the project's own
# command, at the same time on one GPU (each process gets 45% of its memory).
#   bash benchmarks/gpu_generic.sh [FONT_DIR]
# FONT_DIR (optional, e.g. a folder of DejaVu .ttf files carried along) is added to the
# fonts BroadGenerator finds ($FCN_CAPTCHA_FONTS); the model cards list every font read.
# Expected: about 5.5 minutes on one H200. Under $OUT: generic.log, generic_cpu.log, the loss
# curves and models.tgz (generic/ and generic-cpu/, ready for fcn_captcha/pretrained/). With
# INSTALL=1 the two models are also copied into fcn_captcha/pretrained/ of this tree (so that
# a fit run after it in the same command starts from them).
set -euo pipefail
fonts=${1:-}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
[ -n "$fonts" ] && export FCN_CAPTCHA_FONTS=$(cd "$fonts" && pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt" || true
filter() { grep --line-buffered -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn|generate \["; }
train() {  # preset name
  local start; start=$(date +%s)
  python3 -m fcn_captcha.cli train --preset "$1" --workdir "/tmp/run_$1" --test-count 2000 2>&1 | filter \
      > "$out/$1.log" || true
  echo "wall seconds (process): $(( $(date +%s) - start ))" >> "$out/$1.log"
  mkdir -p /tmp/models && rm -rf "/tmp/models/$2" && cp -r "/tmp/run_$1/model" "/tmp/models/$2" 2>/dev/null || true
  cp "/tmp/run_$1/losses.png" "$out/$2-losses.png" 2>/dev/null || true
}
train generic generic &
train generic_cpu generic-cpu &
wait
tar -C /tmp/models -czf "$out/models.tgz" .
if [ "${INSTALL:-0}" = 1 ]; then
  for m in generic generic-cpu; do rm -rf "fcn_captcha/pretrained/$m"; cp -r "/tmp/models/$m" fcn_captcha/pretrained/; done
fi
tail -n 12 "$out/generic.log" "$out/generic_cpu.log"
