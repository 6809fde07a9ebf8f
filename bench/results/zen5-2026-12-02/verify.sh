#!/usr/bin/env bash
# Fresh-seed check of the default recipe (issue 24), once, after the choice: seeds 100-119 through the
# pipeline's own stages on DVC's queue, in a clone of the project, two workers of one thread each.
#   bash verify.sh CLONE fp32 [SEEDS]  # fp32 on the AVX2 path (the caps make `precision: auto` train in fp32)
#   bash verify.sh CLONE bf16 [SEEDS]  # bf16 autocast, native on this CPU
# SEEDS: `-S train.seed=` values, range(100,120) unless given (the stopping study's check: 'range(200,220)').
# Then: python -m stages.report <the batch's experiment names> (its names are printed at the end).
set -euo pipefail
clone=$1 arithmetic=$2 seeds=${3:-range(100,120)}
cd "$clone"
before=$(dvc exp list --name-only 2>/dev/null | sort || true)
case $arithmetic in
  fp32) dvc exp run --queue -S "train.seed=$seeds"
        env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 dvc queue start -j 2 ;;
  bf16) dvc exp run --queue -S "train.seed=$seeds" -S train.precision=bf16
        env OMP_NUM_THREADS=1 dvc queue start -j 2 ;;
  *) echo "usage: verify.sh CLONE fp32|bf16 [SEEDS]" >&2; exit 2 ;;
esac
# Wait until the queue has nothing queued or running (the workers exit when it is empty).
while status=$(dvc queue status 2>/dev/null) && grep -qE 'Queued|Running' <<<"$status"; do sleep 60; done
dvc queue status
comm -13 <(echo "$before") <(dvc exp list --name-only | sort) | tr '\n' ' '; echo
