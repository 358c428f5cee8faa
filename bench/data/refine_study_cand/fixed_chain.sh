#!/bin/bash
# Table IV at a fixed schedule: ./fixed_chain.sh SEED VARIANT[,VARIANT...]
# Each variant trains exactly 24,000 steps on one thread under bfloat16 autocast, rate 1e-3
# without plateau halving, decayed linearly to zero over the last 8,000 steps; then its
# best checkpoint is scored on 256 test samples under both protocols. Snapshot snap_f
# (commit in snap_f/COMMIT).
cd /work/main/runs
seed=$1; variants=$2; d=refine_study_fixed/seed$seed
for v in ${variants//,/ }; do
  PYTHONPATH=snap_f ../.venv/bin/python snap_f/bench/refine_study.py --seed "$seed" \
    --threads 1 --steps 24000 --anneal-steps 8000 --variants "$v" --bf16 \
    --out refine_study_fixed --no-progress || exit
  for p in paper strict; do
    [ -f $d/$v/eval-$p/per_sample.csv ] && continue
    PYTHONPATH=snap_f ../.venv/bin/python -m fairesi evaluate $d/$v/best.pt --n 256 --protocol $p \
      --threads 1 --no-progress --out $d/$v/eval-$p || exit
  done
done
