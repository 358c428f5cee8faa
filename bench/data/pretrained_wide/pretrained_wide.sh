#!/bin/bash
# ./pretrained_wide.sh meg|eeg : issue 15's 'wide' pretrained model, one thread, resumable.
# Started in float32 with nn.GRU (snap_p, 940 steps on MEG); resumed with the fused BiGRU
# and bfloat16 CPU autocast (snap_p2, --bf16); from 2026-12-02 10:33 UTC snap_d (freed memory kept).
cd /work/main/runs
m=$1; ds=SimMEG; [ "$m" = eeg ] && ds=SimEEG
out=pretrained_wide/$m; export PYTHONPATH=snap_d
if [ -f $out/last.pt ]; then
  exec ../.venv/bin/python -m fairesi train --resume --out $out --threads 1 --no-progress --bf16
fi
exec ../.venv/bin/python -m fairesi train --preset wide --dataset $ds --protocol paper \
  --mixture="-5/1/2,5/1/2,15/1/2,5/2/2,5/3/2,5/2/3" --redraw --lr-patience 4 \
  --early-stop-patience 20 --threads 1 --no-progress --bf16 --out $out
