#!/usr/bin/env bash
# fcn_captcha.fit against the CRNN+BiLSTM+CTC baseline on the GPU machine (issue 13, item 4):
# benchmarks/bench_fit.py, one process per JOB, all at once on the one GPU (an equal share of
# its memory each), then each suite's JSONs joined into one learning curve (--merge).
#   bash benchmarks/gpu_fit_curve.sh SCHEMES_DIR BUDGET JOB... [-- bench_fit options]
#   bash benchmarks/gpu_fit_curve.sh /tmp/schemes 250 wheezy:100 wheezy:500 kaggle_v2:100
# SCHEMES_DIR holds SUITE/{train,test} (benchmarks/schemes_on_device.sh writes it); a JOB is
# SUITE:N[,N...] (the first N training files; sizes of one job run one after the other).
# Each fit gets BUDGET seconds and the baseline as long as that fit took. The processes start
# together, so the fits run beside fits and the baselines beside baselines: each pair shares
# the GPU alike. Under $OUT: bench_fit_<suite>_n<sizes>.{json,md,log}, per suite the joined
# bench_fit_<suite>.{json,md,png} (the PNG when matplotlib is installed), and device.txt.
# FCN_COMMIT names the commit in the rows (the machine's copy has no git history):
#   FCN_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_fit_curve.sh /tmp/schemes 250 wheezy:100
set -uo pipefail
schemes=${1:?usage: gpu_fit_curve.sh SCHEMES_DIR BUDGET JOB...}
budget=${2:?usage: gpu_fit_curve.sh SCHEMES_DIR BUDGET JOB...}
shift 2
jobs=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  jobs+=("$1"); shift
done
[ ${#jobs[@]} -gt 0 ] || { echo "gpu_fit_curve: no JOB (SUITE:N[,N...])"; exit 2; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / ${#jobs[@]}, 3))")
export XLA_PYTHON_CLIENT_MEM_FRACTION
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"
python3 -c "import matplotlib" 2>/dev/null || echo "matplotlib is missing: no learning-curve PNG"
filter() { grep --line-buffered -v -E "cuda_timer|Delay kernel|DeprecationWarning|warnings.warn"; }
command="bash benchmarks/gpu_fit_curve.sh $schemes $budget ${jobs[*]}${extra[*]:+ -- ${extra[*]}}"
start=$(date +%s)
pids=()
for job in "${jobs[@]}"; do
  suite=${job%%:*}; sizes=${job#*:}; tag=${suite}_n${sizes//,/-}
  # shellcheck disable=SC2086
  python3 benchmarks/bench_fit.py "$schemes/$suite" --suite "$suite" --sizes ${sizes//,/ } --time-budget "$budget" \
      --workdir "/tmp/bench_fit_$tag" --json "$out/bench_fit_$tag.json" --out "$out/bench_fit_$tag.md" \
      --command "$command" "${extra[@]}" 2>&1 | filter | sed -u "s/^/[$tag] /" > "$out/bench_fit_$tag.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for suite in $(printf '%s\n' "${jobs[@]%%:*}" | sort -u); do
  parts=("$out"/bench_fit_"$suite"_n*.json)
  [ -e "${parts[0]}" ] || { echo "gpu_fit_curve: no result for $suite"; status=1; continue; }
  python3 benchmarks/bench_fit.py --merge "${parts[@]}" --json "$out/bench_fit_$suite.json" \
      --plot "$out/bench_fit_$suite.png" --out "$out/bench_fit_$suite.md" || status=1
done
echo "gpu_fit_curve: $(( $(date +%s) - start )) s in all"
exit $status
