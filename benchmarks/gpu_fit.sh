#!/usr/bin/env bash
# fcn-captcha fit on the lent GPU: kaggle_v2 (800 real files, fit's own hash split: the
# calibration split is the reported set), wheezy and claptcha (1,000 train/ files, --test
# their 500 test/ files) and lib36x4 (5,000 plain-library images with their texts only,
# written by `fcn-captcha generate`, --test 2,000 fresh ones of another seed), each under a
# wall-time budget.
#   bash benchmarks/gpu_fit.sh SCHEMES_DIR [KAGGLE_DIR] [BUDGET_S]
#   bash benchmarks/gpu_fit.sh .schemes .kaggle_data/captcha_images_v2 140
# SCHEMES_DIR holds wheezy/{train,test} and claptcha/{train,test} (labels.csv each).
# BUDGET_S (default 140) is the budget of each fit; the issue's figure is 300 s per scheme.
# FIT_ONLY="wheezy claptcha lib36x4" picks the schemes (default: kaggle wheezy claptcha);
# NAME@LABEL runs only that variant of NAME.
# FIT_ARGS are passed to every fit (e.g. --no-prior).
# VARIANTS="base=|aug=--set warp=3" runs each scheme once per variant (label=extra fit args,
# '|' between variants; default one variant with no extra args).
# PARALLEL=1 runs all (scheme, variant) fits at once on the one GPU, each with an equal share
# of its memory: each gets part of the GPU, so its figures are what a shared GPU gives in
# the same wall time (a lower bound on a fit alone); without it they run one after another.
# Under $OUT: fit.log (every line), summary.json (one object per run) and results.tgz
# (each run's report.md, figures, summary.json, scheme.json, and its model directory, with
# `--cpu-model` its student's model-cpu too, unless
# MODELS is set empty: MODELS= keeps the archive under the 16 MiB a returned file may have;
# a larger one comes back as results.tgz.part-00, -01, ...).
set -euo pipefail
MODELS=${MODELS-1}
schemes=$1; kaggle=${2:-.kaggle_data/captcha_images_v2}; budget=${3:-140}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/stage
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt" || true
filter() { grep --line-buffered -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn"; }
IFS='|' read -r -a variants <<< "${VARIANTS:-=}"
jobs=()
for name in ${FIT_ONLY:-kaggle wheezy claptcha}; do  # NAME@LABEL: that variant only
  for v in "${variants[@]}"; do
    case $name in *@*) [ "${v%%=*}" = "${name#*@}" ] && jobs+=("${name%@*}|$v") ;; *) jobs+=("$name|$v") ;; esac
  done
done
if [ "${PARALLEL:-0}" = 1 ]; then
  XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / ${#jobs[@]}, 3))")
  export XLA_PYTHON_CLIENT_MEM_FRACTION
fi
lib_data() {  # the plain library's texts only: 5,000 training and 2,000 test files (PNG + labels.csv)
  [ -d /tmp/lib36x4/train/png ] && return
  python3 -m fcn_captcha.cli generate --preset lib36x4 --count 5000 --png 5000 --seed 71 --out /tmp/lib36x4/train >/dev/null
  python3 -m fcn_captcha.cli generate --preset lib36x4 --count 2000 --png 2000 --seed 72 --out /tmp/lib36x4/test >/dev/null
}
run() {  # scheme label extra-args
  local name=$1 label=$2 extra=$3 data test=""
  case $name in
    kaggle) [ -d "$kaggle" ] || return 0; data=$kaggle ;;
    lib36x4) data=/tmp/lib36x4/train/png; test=/tmp/lib36x4/test/png ;;
    *) [ -d "$schemes/$name/train" ] || return 0; data=$schemes/$name/train; test=$schemes/$name/test ;;
  esac
  local tag=$name${label:+-$label} start; start=$(date +%s)
  # every fit starts from an empty work directory: fit resumes a finished one in seconds
  # (a second call on a warm machine would report the first call's model)
  rm -rf "/tmp/fit_$tag" "/tmp/stage/$tag"
  # shellcheck disable=SC2086
  python3 -m fcn_captcha.cli fit "$data" --workdir "/tmp/fit_$tag" --time-budget "$budget" \
      ${test:+--test "$test"} ${FIT_ARGS:-} $extra 2>&1 | filter | sed -u "s/^/[$tag] /" | tee -a "$out/fit.log" || true
  echo "[$tag] wall seconds (process): $(( $(date +%s) - start ))" | tee -a "$out/fit.log"
  mkdir -p "/tmp/stage/$tag"
  for f in report.md summary.json scheme.json split.json color.json cleanup.json figures ${MODELS:+model model-cpu}; do
    cp -r "/tmp/fit_$tag/$f" "/tmp/stage/$tag/" 2>/dev/null || true
  done
}
case " ${FIT_ONLY:-} " in *" lib36x4"[@\ ]*) lib_data ;; esac
for j in "${jobs[@]}"; do
  IFS='|' read -r name v <<< "$j"
  label=${v%%=*}; extra=${v#*=}
  if [ "${PARALLEL:-0}" = 1 ]; then run "$name" "$label" "$extra" & else run "$name" "$label" "$extra"; fi
done
wait
python3 - "$out/summary.json" <<'PY'
import json, sys, pathlib
rows = {}
for d in sorted(pathlib.Path("/tmp/stage").iterdir()):
    p = d / "summary.json"
    if p.exists():
        s = json.loads(p.read_text())
        rows[d.name] = {"wall_s": s["wall_s"], "calibration": s["calibration"], "test": s.get("test"),
                        "flagged": len(s["flagged"]), "color": s.get("color"), "cleanup": s.get("cleanup"),
                        "scheme": {k: s["scheme"][k] for k in
                                   ("alphabet", "min_length", "max_length", "width", "height", "color", "invert")},
                        "weak": s["weak_history"], "training": s.get("training")}
        t = s.get("test") or {}
        print(f"{d.name}: calibration {100 * s['calibration']['sequence_accuracy']:.2f}% of "
              f"{s['calibration']['count']}, test {100 * t.get('sequence_accuracy', float('nan')):.2f}% of "
              f"{t.get('count', 0)}, {s['wall_s']:.0f} s, {len(s['flagged'])} flagged")
pathlib.Path(sys.argv[1]).write_text(json.dumps(rows, indent=1))
PY
tar -C /tmp/stage -czf "$out/results.tgz" .
# a returned file may have 16 MiB: a larger archive (three `wide` networks are about 21 MB) comes
# back in parts; join them with `cat results.tgz.part-* > results.tgz`
if [ "$(stat -c %s "$out/results.tgz")" -gt $((15 * 1024 * 1024)) ]; then
  split -b 15M -d "$out/results.tgz" "$out/results.tgz.part-" && rm "$out/results.tgz"
fi
