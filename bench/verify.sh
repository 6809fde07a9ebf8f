#!/usr/bin/env bash
# The promise, checked on fresh seeds: the default params.yaml of COMMIT, one run per seed of SEEDS (a dvc
# `-S` value such as 'range(700,720)'), through the pipeline's own stages on DVC's queue in a fresh clone:
# JOBS workers (2 unless set) of THREADS threads each (1 unless set); JOBS=1 THREADS=2 finishes seeds in
# order, so a check cut short still has whole seeds. MNIST from the unpacked IDX files in $RAW (given to `download` as
# MNIST_DIR). Prints `python -m stages.report`'s table and writes it to OUT_FILE. Kernel caps such as
# ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 pass through to the runs (each run's log names its kernels).
# Usage: RAW=/path/to/idx bash bench/verify.sh COMMIT SEEDS OUT_FILE
set -euo pipefail
COMMIT=$1 SEEDS=$2 OUT=$(realpath -m "$3") RAW=${RAW:-/tmp/raw}
repo=$(git rev-parse --show-toplevel)
export PATH=$repo/.venv/bin:$PATH MNIST_DIR=$RAW DVC_NO_ANALYTICS=1
rm -rf /tmp/verify && git clone -q "$repo" /tmp/verify && cd /tmp/verify && git checkout -q "$COMMIT"
dvc exp run --queue -S "train.seed=$SEEDS" >/dev/null
expected=$(dvc queue status | grep -c Queued)
OMP_NUM_THREADS=${THREADS:-1} dvc queue start -j "${JOBS:-2}" >/dev/null 2>&1
# Finished experiments are Git refs (cheap to count); `dvc queue status` takes CPU the workers need.
done_runs() { git for-each-ref --format='%(refname)' refs/exps | grep -cE '^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/' || true; }
while [ "$(done_runs)" -lt "$expected" ]; do
  sleep 60
  dvc queue status | grep -q Failed && { dvc queue status; echo "a run failed: see dvc queue logs"; break; }
done
dvc queue status | tail -3
python -m stages.report | tee "$OUT"
