"""Cost of the preemption agreement (checkpointing.StopRequest.agreed): the
per-step all-reduce of the stop flag, alone, between jax.distributed processes.

  for i in 0 1; do JAX_COORDINATOR_ADDRESS=127.0.0.1:12356 JAX_NUM_PROCESSES=2 \
    JAX_PROCESS_ID=$i python launch/stop_sync_cost.py & done; wait

Prints, on process 0, the mean wall time of one `agreed` call over N calls,
each waiting for the previous one's result as the train loop does. In
training the all-reduce runs behind the step on the device queue, so this is
an upper bound of what it adds per step.
"""

import time

import jax
import numpy as np

from sctd_jax import checkpointing
from sctd_jax import sharding

N = 500

if __name__ == '__main__':
  sharding.maybe_initialize_distributed(120)
  stop = checkpointing.StopRequest()
  for i in range(20):  # compile and warm up
    stop.agreed(np.int32(i))
  started = time.perf_counter()
  for i in range(N):
    stop.agreed(np.int32(i))
  seconds = (time.perf_counter() - started) / N
  stop.restore_handlers()
  if jax.process_index() == 0:
    print(f'{jax.process_count()} processes, {jax.device_count()} devices '
          f'({jax.default_backend()}): {seconds * 1e3:.3f} ms per step')
