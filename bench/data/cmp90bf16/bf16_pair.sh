#!/bin/bash
# ./bf16_pair.sh SEED NETWORK MINUTES [DATASET] : one run of the 'wide' comparison under
# bfloat16 CPU autocast (fused BiGRU for FAIR-ESI), one thread, on DATASET (default SimMEG);
# run the two networks at once. Snapshot snap_b (commit 43c0176).
cd /work/main/runs
PYTHONPATH=snap_b:snap_b/bench ../.venv/bin/python snap_b/bench/deepsif_compare.py --size wide \
  --networks "$2" --datasets "${4:-SimMEG}" --lrs 1e-3 --seed "$1" --minutes "$3" --threads 1 --bf16 \
  --out cmp90bf16 --no-progress
