#!/bin/bash
# Candidate refinement study worker: ./cand_chain.sh SEED VARIANT[,VARIANT...]
# Each variant trained until flat, one thread, under bfloat16 CPU autocast from 2026-12-02
# 09:30 UTC (snapshot snap_c; steps before that ran in float32 with snap/).
cd /work/main/runs
seed=$1; variants=$2
for v in ${variants//,/ }; do
  PYTHONPATH=snap_c ../.venv/bin/python snap_c/bench/refine_study.py --seed "$seed" --threads 1 \
    --until-flat 3000 --flat-tol 0.02 --steps 40000 --variants "$v" --bf16 \
    --out refine_study_cand --no-progress
done
