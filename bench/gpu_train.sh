#!/usr/bin/env bash
# One command for a machine with one GPU (issue 15): build, simulate a waveform bank, train
# FAIR-ESI's 'paper' preset on SimMEG r = 5 dB, N_s = 1, N_n = 2 under the paper's protocol
# with the synthesis on the GPU until the validation loss stops improving or the time is up,
# evaluate the Table II row under both protocols, and leave everything needed under $OUT in
# files of at most 16 MiB:
#
#   env.txt, *.log            versions, device, and every step's log
#   train_log.csv             the learning curve (validation after every epoch)
#   metrics_paper.{md,json}   test metrics, paper protocol (DeepSIF's rule), N_EVAL samples
#   metrics_strict.{md,json}  the same checkpoint under our strict protocol
#   best.pt.part-*            best.pt without optimizer state, weights in float16, split in
#                             15 MiB parts: `cat best.pt.part-* > best.pt`, then
#                             `fairesi evaluate best.pt` (best.pt.sha256 checks the join)
#
# Budget: the whole script within ~9 minutes on one H200 (TRAIN_MINUTES of training). Needs
# python3 with torch (CUDA build), numpy, scipy, h5py, numba, tqdm, cmake and nvcc; no MNE.
# A CPU dry run (tests/test_gpu_scripts.py): SKIP_BUILD=1 DEVICE=cpu BANK=synthetic
# TRAIN_ARGS="--preset tiny" TRAIN_MINUTES=0.2 N_EVAL=8 bash bench/gpu_train.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-train}
WORK=${WORK:-$OUT/work}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
TRAIN_ARGS=${TRAIN_ARGS:---preset paper --early-stop-patience 3 --lr-patience 1}
N_EVAL=${N_EVAL:-2048}
BANK=${BANK:-$WORK/bank.h5}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
[ "${SKIP_BUILD:-0}" = 1 ] || export PYTHONPATH=$PWD/python
STEP_TAIL=15
# shellcheck source=bench/gpu_steps.sh
source bench/gpu_steps.sh

{
    date -u
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 || echo "nvidia-smi: none"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    git log -1 --format='commit %H %s' 2>/dev/null
} 2>&1 | tee "$OUT/env.txt"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # The simulator binding needs pybind11; without it, bring a bank (BANK=FILE, e.g. one
    # built with `fairesi simulate bank --background 20`, ~40 MB, small enough to carry).
    NMM=OFF
    $PY -c "import pybind11" 2>/dev/null && NMM=ON
    step configure cmake -S . -B build/gpu-train -DCMAKE_BUILD_TYPE=Release \
        -DPython_EXECUTABLE="$($PY -c 'import sys; print(sys.executable)')" \
        -DFAIRESI_INPLACE=ON -DFAIRESI_BUILD_RUNNER=OFF -DFAIRESI_BUILD_NMM=$NMM \
        -DCMAKE_CUDA_ARCHITECTURES=90
    step build cmake --build build/gpu-train -j "$JOBS" || exit $status
    if [ $NMM = OFF ] && [ "$BANK" != synthetic ] && [ ! -f "$BANK" ]; then
        echo "no pybind11 here to build the simulator, and no bank at $BANK: pass BANK=FILE"
        exit 2
    fi
fi
if [ "$BANK" != synthetic ] && [ ! -f "$BANK" ]; then
    step bank $PY -m fairesi simulate bank --threads "$JOBS" --out "$BANK" --no-progress \
        || exit $status
fi

# shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
step train $PY -m fairesi train $TRAIN_ARGS --dataset SimMEG --snr-db 5 --n-sources 1 \
    --n-rings 2 --protocol paper --bank "$BANK" --device "$DEVICE" \
    --max-minutes "$TRAIN_MINUTES" --out "$WORK/train" --no-progress
cp "$WORK/train/train_log.csv" "$OUT/" 2>/dev/null
CKPT=$WORK/train/best.pt
[ -f "$CKPT" ] || CKPT=$WORK/train/last.pt

for protocol in paper strict; do
    step "evaluate_$protocol" $PY - "$CKPT" "$protocol" "$N_EVAL" "$DEVICE" "$BANK" \
        "$OUT/metrics_$protocol" <<'PYEOF'
import json, sys
from fairesi.evaluate import evaluate_checkpoint
path, protocol, n, device, bank, out = sys.argv[1:]
result = evaluate_checkpoint(path, n=int(n), device=device, bank=bank, protocol=protocol,
                             batch_size=64, progress=False)
text = (f"{result.protocol} protocol (rule {result.rule}), first {n} test samples, "
        f"{result.n_empty} empty reconstructions left out\n\n" + result.table(label=path))
open(out + ".md", "w").write(text)
json.dump({"summary": result.summary, "n": int(n), "n_empty": result.n_empty,
           "protocol": result.protocol, "rule": result.rule}, open(out + ".json", "w"))
print(text)
PYEOF
done

step pack $PY - "$CKPT" "$OUT" <<'PYEOF'
import hashlib, sys, torch
from pathlib import Path
path, out = Path(sys.argv[1]), Path(sys.argv[2])
payload = torch.load(path, map_location="cpu", weights_only=True)
slim = {k: payload[k] for k in ("format", "version", "config", "metrics", "progress")}
slim["state_dict"] = {k: v.half() if v.is_floating_point() else v
                      for k, v in payload["state_dict"].items()}
whole = out / "best.pt"
torch.save(slim, whole)
data = whole.read_bytes()
(out / "best.pt.sha256").write_text(hashlib.sha256(data).hexdigest() + "  best.pt\n")
part = 15 * 2**20
for i in range(0, len(data), part):
    (out / f"best.pt.part-{i // part:02d}").write_bytes(data[i:i + part])
whole.unlink()
print(f"packed {path} ({len(data) / 2**20:.1f} MiB in float16) into {out}")
PYEOF
echo "== gpu_train: exit $status; results in $OUT"
exit $status
