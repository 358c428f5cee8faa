#!/bin/bash
# ./cand_eval.sh SEED VARIANT [AGAINST] : score a flat candidate-study run on its seed's 256
# test samples under both protocols (paired with AGAINST's evaluation when given).
cd /work/main/runs
s=$1; v=$2; a=$3; d=refine_study_cand/seed$s
for p in paper strict; do
  extra=(); [ -n "$a" ] && extra=(--against $d/$a/eval-$p)
  ../.venv/bin/python -m fairesi evaluate $d/$v/best.pt --n 256 --protocol $p --threads 1 \
    --no-progress --out $d/$v/eval-$p "${extra[@]}"
done
