#!/bin/bash
# ./anneal.sh plateau|anneal : seed 1's 90-minute rank-512 run (step 12,988) continued to
# step 17,500 on one thread, with the plateau schedule or a linear decay to zero.
set -e
cd /work/main/runs
v=$1; out=anneal/$v; py="../.venv/bin/python"; export PYTHONPATH=snap_w3
src=cmp90cand_r512/SimMEG/seed1/fair_esi-lr0.001
mkdir -p $out && cp $src/last.pt $src/best.pt $src/train_log.csv $out/
extra=(); [ "$v" = anneal ] && extra=(--anneal-steps 4512)
$py -m fairesi train --resume --out $out --max-steps 17500 --max-minutes 60 --threads 1 --no-progress "${extra[@]}"
for p in paper strict; do
  if [ "$v" = plateau ]; then  # the 90-minute state, once
    $py -m fairesi evaluate $src/best.pt --n 256 --protocol $p --threads 1 --no-progress --out anneal/base-$p
  fi
  while [ ! -f anneal/base-$p/per_sample.csv ]; do sleep 20; done
  $py -m fairesi evaluate $out/best.pt --n 256 --protocol $p --threads 1 --no-progress --out $out/eval-$p --against anneal/base-$p
done
