#!/usr/bin/env bash
# One full run on a GPU machine, for the record (docs/gpu-runs/): gpucnn doctor, the whole test suite,
# the benchmark in FP32 and TF32 and its graph rows, and (when the data is there) two epochs of
# Fashion-MNIST. Each part's output goes to its own file; a short table comes last. Meant to be one
# call of a lent machine:
#   bash scripts/gpu_run.sh [OUTDIR]        (default: $OUT/gpu-run, else docs/gpu-runs/<date>-<commit>)
# Set GPUCNN_DATA to a folder holding the Fashion-MNIST IDX files for the training part.
set -uo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
out=${1:-${OUT:+$OUT/gpu-run}}
out=${out:-docs/gpu-runs/$(date -u +%Y-%m-%d)-$commit}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
  echo "date:   $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $commit"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu:    /'
  echo "cpu:    $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
  python3 -c "import cupy, numpy, sys; print('python:', sys.version.split()[0], ' numpy:', numpy.__version__, ' cupy:', cupy.__version__)"
} > "$out/machine.txt" 2>&1

python3 -m pip install --quiet --no-deps --no-build-isolation -e . >"$out/install.txt" 2>&1 \
  || python3 -m pip install --quiet --no-deps -e . >>"$out/install.txt" 2>&1
python3 -m gpucnn doctor --seed 0 >"$out/doctor.txt" 2>&1; doctor_rc=$?
python3 -m pytest -q -p no:cacheprovider >"$out/tests.txt" 2>&1; tests_rc=$?
python3 -m gpucnn bench --batch-sizes 64,128,256,1024 >"$out/bench-fp32.txt" 2>&1; bench_rc=$?
python3 -m gpucnn bench --device cuda:0 --batch-sizes 256 --tf32 >"$out/bench-tf32.txt" 2>&1
python3 -m gpucnn bench --device cuda:0 --batch-sizes 256 --graph >"$out/bench-graph.txt" 2>&1; graph_rc=$?
if [ -n "${GPUCNN_DATA:-}" ]; then
  python3 -m gpucnn train --device cuda --epochs 2 --no-progress --data-dir "$GPUCNN_DATA" \
    --out /tmp/gpucnn-gpu-run >"$out/train-2-epochs.txt" 2>&1
fi

{
  cat "$out/machine.txt"
  echo "doctor: exit $doctor_rc; $(tail -n 1 "$out/doctor.txt")"
  echo "tests:  exit $tests_rc; $(tail -n 1 "$out/tests.txt")"
  echo "bench:  exit $bench_rc"
  grep -E '^(#|device|cuda|cpu)' "$out/bench-fp32.txt"
  grep -E '^cuda' "$out/bench-tf32.txt"
  echo "bench --graph: exit $graph_rc"
  grep -E '^(device|cuda)' "$out/bench-graph.txt"
  [ -f "$out/train-2-epochs.txt" ] && grep -E '^ +[0-9]+ |test accuracy|training step' "$out/train-2-epochs.txt"
} | tee "$out/summary.txt"
