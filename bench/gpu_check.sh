#!/usr/bin/env bash
# The GPU checks of a session that is lent a CUDA machine, as one prepared script (issues 5
# and 6; bench/RESULTS.md keeps their rows 'not yet measured' until this has run):
#
#   1. build the op library in place (python/fairesi/lib) against that machine's python3
#      torch, with the CUDA kernel (the configure step must report it);
#   2. run the op and model tests there (the CUDA tests run instead of being skipped);
#   3. bench/bench_ops.py on the device: the fused op vs eager/compiled reference and copy;
#   4. FAIR-ESI training throughput on the device for TRAIN_STEPS steps (train preset
#      'paper': batch 64, the paper-size model, SimMEG, embedded head model; synthetic
#      waveform bank, so nothing needs simulating first; 100 steps per epoch).
#
# Needs python3 with torch (CUDA build), numpy, scipy, h5py, numba, tqdm, pytest, cmake and
# nvcc: the device image has all of them, and no MNE, which none of these steps imports.
# Every log goes to $OUT (default gpu-check/); the exit status is that of the first failed
# step. On a CPU machine, `DEVICE=cpu PYTHON=.venv/bin/python TRAIN_STEPS=4
# TRAIN_ARGS="--preset tiny" BENCH_ARGS="--repeats 1 --no-compile --train-preset tiny" bash
# bench/gpu_check.sh` runs the same steps as a dry run (the missing CUDA kernel only warns).
#
# Usage (device tool): bash bench/gpu_check.sh            (about 5-8 minutes on an H100/H200)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
TRAIN_STEPS=${TRAIN_STEPS:-300}
TRAIN_ARGS=${TRAIN_ARGS:---preset paper --head-model default --bank synthetic --n-train-samples 6400 --n-val-samples 256}
BENCH_ARGS=${BENCH_ARGS:---repeats 5 --train-preset cpu}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
# shellcheck source=bench/gpu_steps.sh
source bench/gpu_steps.sh

{
    date -u
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    $PY -c "import platform, torch; print(platform.python_version(), 'torch', torch.__version__,
          'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available()
          else 'no CUDA device')"
    git log -1 --format='commit %H %s' 2>/dev/null
} 2>&1 | tee "$OUT/env.txt"

step configure cmake -S . -B build/gpu-check -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$($PY -c 'import sys; print(sys.executable)')" -DFAIRESI_INPLACE=ON \
    -DFAIRESI_BUILD_NMM=OFF -DFAIRESI_BUILD_RUNNER=OFF -DCMAKE_CUDA_ARCHITECTURES=90
if ! grep -q "with the CUDA kernel" "$OUT/configure.log"; then
    echo "configure: the op library would be built WITHOUT the CUDA kernel"
    if [ "$DEVICE" != cpu ] && [ $status -eq 0 ]; then status=1; fi
fi
step build cmake --build build/gpu-check -j "$JOBS" || exit $status

step tests $PY -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_fair_esi.py
# shellcheck disable=SC2086
step bench_ops $PY bench/bench_ops.py --device "$DEVICE" $BENCH_ARGS

# shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
step train $PY -m fairesi train $TRAIN_ARGS --device "$DEVICE" --max-steps "$TRAIN_STEPS" \
    --checkpoint-every 100000 --out "$OUT/train" --no-progress
if [ -f "$OUT/train/train_log.csv" ]; then
    echo "== training throughput (samples/s, train_log.csv):"
    tail -n 3 "$OUT/train/train_log.csv" | tee "$OUT/train_throughput.txt"
    rm -f "$OUT"/train/*.pt  # checkpoints are not needed back
fi
echo "== gpu_check: exit $status; logs in $OUT"
exit $status
