#!/usr/bin/env bash
# One pass beside the shifts, on fresh seeds: 10 seeds (400-409, used by no study or check)
# of the default params.yaml, fp32 (this host has no native bf16), through the pipeline's own stages on
# DVC's queue, two workers of one thread each, in a fresh clone of the given commit. MNIST from the unpacked
# files in $RAW (MNIST_DIR). Prints `python -m stages.report`'s table, which the log quotes as it came out.
# Usage: verify.sh COMMIT OUT_FILE
set -euo pipefail
COMMIT=$1 OUT=$2 RAW=${RAW:-/tmp/raw}
repo=$(git rev-parse --show-toplevel)
export PATH=$repo/.venv/bin:$PATH MNIST_DIR=$RAW DVC_NO_ANALYTICS=1
rm -rf /tmp/verify && git clone -q "$repo" /tmp/verify && cd /tmp/verify && git checkout -q "$COMMIT"
dvc exp run --queue -S 'train.seed=range(400,410)' >/dev/null
OMP_NUM_THREADS=1 dvc queue start -j 2 >/dev/null 2>&1
# Finished experiments are Git refs (cheap to count); `dvc queue status` takes CPU the workers need.
done_runs() { git for-each-ref --format='%(refname)' refs/exps | grep -cE '^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/' || true; }
while [ "$(done_runs)" -lt 10 ]; do
  sleep 60
  dvc queue status | grep -q Failed && { dvc queue status; echo "a run failed: see dvc queue logs"; break; }
done
dvc queue status | tail -3
python -m stages.report | tee "$OUT"
