#!/usr/bin/env bash
# The EEG + MEG fusion study (issue 16): train the four networks of the fusion benchmark on
# one SimEEGMEG mixture of its rows (1 source; r in {-5, 0, 5} dB x 1, 2, 3 rings, sample i
# from row i mod 9), each with the same recipe and seed, then run
# `fairesi benchmark --dataset SimEEGMEG` on the same test samples of every row:
#
#   mmdf_esi        MMDF-ESI (EEG + MEG, squeeze-and-excitation early fusion)
#   fair_esi        fused FAIR-ESI (EEG + MEG)
#   fair_esi@eeg    FAIR-ESI on the EEG channels of the same samples
#   fair_esi@meg    FAIR-ESI on the MEG channels of the same samples
#
# and with ABLATION=1 also MMDF-ESI's fusion ablation, the same network less one encoder
# (on the fused network's scalp-image grid, so each encoder has the fused one's shape):
#
#   mmdf_esi@eeg    MMDF-ESI on the EEG channels
#   mmdf_esi@meg    MMDF-ESI on the MEG channels
#
# The recipe is the shipped models' (docs/models/): the preset's learning rate, fresh noise and
# scale every epoch (--redraw), a patient LR schedule (--lr-patience 4, early stop after 20).
# Every run resumes from its last.pt when the script is run again (MINUTES more each), so
# the study grows over several sessions; the benchmark is rerun each time from best.pt.
# Outputs: $OUT/<method>/ (checkpoints, train_log.csv), $OUT/benchmark/ and $OUT/summary.md
# (bench/fusion_summary.py: budgets, means ± std, paired differences, the target per row).
#
#   OUT=runs/fusion MINUTES=60 THREADS=1 PARALLEL=2 bash bench/fusion_train.sh
#
# MMDF-ESI maps every time sample on its own (its authors' network takes one instant per
# input), so it learns from INSTANTS random samples of each window per step (default 32;
# `fairesi train --train-instants`, the loss scaled to the whole window's): a step on whole
# 500-sample windows takes it ~18 s on one thread, on 32 instants ~0.6 s. INSTANTS=0 trains
# it on whole windows.
#
# PROTOCOL=strict (default) or paper trains and benchmarks under that protocol (a
# checkpoint is only benchmarked under the protocol it was trained with), so each protocol
# needs its own OUT.
# PARALLEL runs that many trainings at once (one per core). A dry run at toy size
# (tests/test_fusion.py): PRESET=tiny MINUTES=0.05 N=4 ROWS=5/1/1,-5/1/0.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fusion}
MINUTES=${MINUTES:-60}
THREADS=${THREADS:-1}
PARALLEL=${PARALLEL:-2}
PRESET=${PRESET:-cpu}
N=${N:-256}
SEED=${SEED:-0}
PROTOCOL=${PROTOCOL:-strict}
INSTANTS=${INSTANTS:-32}
ABLATION=${ABLATION:-0}
PY=${PYTHON:-python3}
# The benchmark's fusion rows (r/N_s/N_n), the training mixture and the tables alike.
ROWS=${ROWS:--5/1/1,-5/1/2,-5/1/3,0/1/1,0/1/2,0/1/3,5/1/1,5/1/2,5/1/3}
CONFIGS=()
IFS=, read -r -a row_list <<<"$ROWS"
for row in "${row_list[@]}"; do
    CONFIGS+=(--config "SimEEGMEG:${row//\//:}")
done
METHODS=(mmdf_esi fair_esi fair_esi@eeg fair_esi@meg)
[ "$ABLATION" = 1 ] && METHODS+=(mmdf_esi@eeg mmdf_esi@meg)
mkdir -p "$OUT"

train_one() {
    local method=$1 dir=$OUT/${1/@/_} name=${1%@*} view= instants=
    [[ $method == *@* ]] && view=${method#*@}
    [[ $name == mmdf_esi && $INSTANTS != 0 ]] && instants=$INSTANTS
    if [ -f "$dir/last.pt" ]; then
        $PY -m fairesi train --resume --out "$dir" --max-minutes "$MINUTES" \
            --threads "$THREADS" --no-progress
    else
        $PY -m fairesi train --preset "$PRESET" --model "$name" --dataset SimEEGMEG \
            --mixture="$ROWS" ${view:+--view "$view"} ${instants:+--train-instants "$instants"} --protocol "$PROTOCOL" --redraw \
            --lr-patience 4 --early-stop-patience 20 --seed "$SEED" \
            --max-minutes "$MINUTES" --threads "$THREADS" --out "$dir" \
            --no-progress
    fi >>"$OUT/${method/@/_}.log" 2>&1
    echo "== $method: exit $? ($(tail -n 1 "$OUT/${method/@/_}.log"))"
}

status=0
running=0
for method in "${METHODS[@]}"; do
    train_one "$method" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done

CHECKPOINTS=()
for method in "${METHODS[@]}"; do
    dir=$OUT/${method/@/_}
    ckpt=$dir/best.pt
    [ -f "$ckpt" ] || ckpt=$dir/last.pt
    CHECKPOINTS+=(--checkpoint "$method=$ckpt")
done
METHOD_LIST=$(IFS=,; echo "${METHODS[*]},sLORETA")
$PY -m fairesi benchmark --dataset SimEEGMEG --preset "$PRESET" "${CONFIGS[@]}" \
    --methods "$METHOD_LIST" "${CHECKPOINTS[@]}" --n "$N" --seed "$SEED" --protocol "$PROTOCOL" --threads "$THREADS" --no-progress \
    --out "$OUT/benchmark" || status=1
$PY bench/fusion_summary.py "$OUT" --figure "$OUT/summary.png" >"$OUT/summary.md" || status=1
echo "== fusion_train: exit $status; tables in $OUT/benchmark/benchmark.md, $OUT/summary.md"
exit $status
