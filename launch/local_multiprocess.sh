#!/usr/bin/env bash
# Two CPU processes joined by jax.distributed (gloo collectives) on this
# machine; each owns one CPU device and reads half of every batch. Exits
# non-zero when any process fails (the others then stop too: a dead peer
# ends them within mesh.heartbeat_timeout_s).
set -euo pipefail
WORKDIR=${WORKDIR:-runs/tiny_2proc}
PORT=${PORT:-12355}
NUM_PROCESSES=${NUM_PROCESSES:-2}
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$NUM_PROCESSES \
    JAX_PROCESS_ID=$i \
    python -m sctd_jax.train --config configs/tiny.py --workdir "$WORKDIR" "$@" &
  pids+=("$!")
done
# Ctrl-C or SIGTERM reaches every process; they agree on a step and save.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  code=0
  wait "$pid" || code=$?
  while kill -0 "$pid" 2>/dev/null; do   # `wait` returned for the trap
    code=0
    wait "$pid" || code=$?
  done
  if ((code != 0)); then
    echo "local_multiprocess.sh: process $pid exited with status $code" >&2
    status=$code
  fi
done
exit "$status"
