#!/usr/bin/env bash
# Two CPU processes joined by jax.distributed (gloo collectives) on this
# machine; each owns one CPU device and reads half of every batch.
set -euo pipefail
WORKDIR=${WORKDIR:-runs/tiny_2proc}
PORT=${PORT:-12355}
for i in 0 1; do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
    python -m sctd_jax.train --config configs/tiny.py --workdir "$WORKDIR" "$@" &
done
wait
