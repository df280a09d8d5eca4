#!/usr/bin/env bash
# fcn_captcha.fit against the CRNN+BiLSTM+CTC baseline on the GPU machine (issue 13, item 4):
# benchmarks/bench_fit.py on
#   wheezy     N = 200 and 1000 (train/ and test/ of the scheme folder);
#   kaggle_v2  N = 200 and all of its training split (639 of the 800 files; the 161 files of
#              real_split's holdout 0.22 are the test set, listed in the JSON),
# fit's time budget BUDGET seconds per N (default 45) and the baseline for as long as fit took.
# About 2 x BUDGET + 15 s per N, plus ~30 s of start-up: ~7 minutes at 45 s (the device
# allows 10 minutes per command). Under $OUT: bench_fit_<suite>.{json,md,log}, the learning
# curves bench_fit_<suite>.png (when matplotlib is installed) and device.txt.
# The data must be inside the checkout (git-ignored folders named in `carry`); a captcha
# wheel in .whl/ is installed first, as in the other GPU scripts. FCN_COMMIT names the
# commit in the rows (the machine's copy has no git history):
#   FCN_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_fit_curve.sh .data/wheezy .data/captcha_images_v2 45
# Options after BUDGET go to bench_fit.py (e.g. --baseline-only, --crnn small).
set -uo pipefail
wheezy=${1:?usage: gpu_fit_curve.sh WHEEZY_DIR KAGGLE_DIR [BUDGET]}
kaggle=${2:?usage: gpu_fit_curve.sh WHEEZY_DIR KAGGLE_DIR [BUDGET]}
budget=${3:-45}
shift $(( $# < 3 ? $# : 3 ))
extra=("$@")  # more bench_fit options, e.g. --baseline-only (a dry run without fit)
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python3 -c "import matplotlib" 2>/dev/null || echo "matplotlib is missing: no learning-curve PNG"
filter() { grep --line-buffered -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn"; }
command="bash benchmarks/gpu_fit_curve.sh $wheezy $kaggle $budget${extra[*]:+ ${extra[*]}}"
status=0
bench() {  # bench SUITE DATA [bench_fit options]
  local suite=$1; shift
  python3 benchmarks/bench_fit.py "$@" --suite "$suite" --time-budget "$budget" --workdir "/tmp/bench_fit_$suite" \
      --json "$out/bench_fit_$suite.json" --plot "$out/bench_fit_$suite.png" --out "$out/bench_fit_$suite.md" \
      --command "$command" "${extra[@]}" 2>&1 | filter | tee "$out/bench_fit_$suite.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "bench_fit $suite failed (exit $rc)"; status=1; }
}
start=$(date +%s)
for suite in ${CURVE_ONLY:-wheezy kaggle_v2}; do  # CURVE_ONLY=kaggle_v2: that suite alone
  case $suite in
    wheezy) bench wheezy "$wheezy" --sizes 200 1000 ;;
    kaggle_v2) bench kaggle_v2 "$kaggle" --holdout 0.22 --sizes 200 100000 ;;  # 100000: capped at the training split
  esac
done
echo "gpu_fit_curve: $(( $(date +%s) - start )) s in all"
exit $status
