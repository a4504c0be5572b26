"""Device mesh, logical-axis rules and the shardings of state and batch.

As in MaxText, parameters name their axes logically (`models.py` annotates
every one with `nn.with_logical_partitioning`) and one rules table maps those
names onto the mesh axes `data`, `fsdp`, `tensor`: the batch is split over
data x fsdp, weights are split over fsdp (ZeRO-3 style, gathered per layer by
XLA) and over tensor (Megatron style). The importance table, step and RNG key
are replicated. The same `train_step` runs on every mesh; only the shardings
passed to `jax.jit` change.
"""

import os
import sys

from absl import logging
import flax.linen as nn
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from sctd_jax import config as config_lib

MESH_AXES = ('data', 'fsdp', 'tensor')
LOGICAL_RULES = (
    ('batch', ('data', 'fsdp')),
    ('vocab', 'tensor'),
    ('heads', 'tensor'),
    ('mlp', 'tensor'),
    ('embed', 'fsdp'),
    # The stacked-layer axis of scanned runs (model.scan_layers): every
    # device holds all layers of its shard, as in MaxText.
    ('layers', None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with one -1 taking the remaining devices."""
  sizes = [mesh_config[a] for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise config_lib.ConfigError(
        f'config keys mesh.{{data, fsdp, tensor}}={sizes}: at most one may be -1.')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise config_lib.ConfigError(
          f'config keys mesh.{{data, fsdp, tensor}}={sizes} do not divide the '
          f'{num_devices} devices.')
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise config_lib.ConfigError(
        f'config keys mesh.{{data, fsdp, tensor}}={sizes} use {int(np.prod(sizes))} '
        f'devices but {num_devices} are present; set one of them to -1.')
  return tuple(sizes)


def make_mesh(mesh_config) -> jax.sharding.Mesh:
  shape = mesh_shape(mesh_config, jax.device_count())
  return jax.make_mesh(shape, MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def param_shardings(model, mesh):
  """NamedShardings of the (unboxed) params from their logical axis names."""
  ids = jax.ShapeDtypeStruct((1, 8), np.int32)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids))['params']
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, LOGICAL_RULES)


def state_shardings(model, mesh, abstract_state):
  """Shardings of the whole train state: optimizer moments follow their
  params; counters, the importance table and the RNG key are replicated."""
  replicated = NamedSharding(mesh, P())
  params = param_shardings(model, mesh)
  opt_state = optax.tree_map_params(
      abstract_state.tx, lambda _, sharding: sharding, abstract_state.opt_state,
      params, transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  return abstract_state.replace(step=replicated, params=params, opt_state=opt_state,
                                importance=replicated, rng=replicated)


def log_platform(config, dtype) -> None:
  """Logs where the run computes and in which dtype (`model.dtype` resolved),
  and warns when a BERT-base-sized model (or larger) is about to train on
  CPUs: `pip install -e .` brings the CPU jaxlib only, and a GPU box without
  `.[cuda]` silently trains on its CPU."""
  platform = jax.default_backend()
  logging.info('Platform %s: %d devices (%d on this process, %d processes); '
               'compute dtype %s.', platform, jax.device_count(),
               jax.local_device_count(), jax.process_count(), np.dtype(dtype).name)
  if platform == 'cpu' and config.model.hidden_size >= 768:
    logging.warning(
        'Training a model with hidden size %d on the CPU: it will take weeks. '
        'For GPUs install pip install -e ".[cuda]", for TPUs -e ".[tpu]", and '
        'check that jax.devices() lists them.', config.model.hidden_size)


def batch_sharding(mesh) -> NamedSharding:
  """Rows of every batch array split over data x fsdp."""
  return NamedSharding(mesh, P(('data', 'fsdp')))


def global_batch(local_batch: dict, sharding: NamedSharding, batch_size: int) -> dict:
  """A global jax.Array per key, [batch_size, ...], from this process's rows."""
  return {k: jax.make_array_from_process_local_data(
              sharding, v, (batch_size, *v.shape[1:]))
          for k, v in local_batch.items()}


def maybe_initialize_distributed(timeout_s: int, heartbeat_timeout_s: int = 100) -> None:
  """`jax.distributed.initialize()` when the environment describes several
  processes (an explicit coordinator, a SLURM job step with several tasks,
  or a multi-host TPU slice); a peer that does not start ends the job after
  `timeout_s`, one that dies after `heartbeat_timeout_s`."""
  env = os.environ
  explicit = {}
  if 'JAX_COORDINATOR_ADDRESS' in env:  # e.g. launch/local_multiprocess.sh
    explicit = dict(num_processes=int(env['JAX_NUM_PROCESSES']),
                    process_id=int(env['JAX_PROCESS_ID']))
  multi = (explicit
           or int(env.get('SLURM_STEP_NUM_TASKS', env.get('SLURM_NTASKS', '1'))) > 1
           or len(env.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1)
  if multi:
    jax.distributed.initialize(initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s, **explicit)
    logging.info('Process %d of %d, %d local of %d devices.', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def exit_after_peer_failure(error: Exception) -> None:
  """Ends this process with status 1 and one clear line when a collective
  failed because another process died (gloo reports a reset connection; NCCL
  waits until the heartbeat timeout ends every process). `os._exit` skips
  jax.distributed's shutdown barrier, which would wait for the dead process
  and then abort with a C++ stack trace."""
  first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ''
  logging.flush()
  sys.stderr.write(
      f'error: process {jax.process_index()} of {jax.process_count()} stops: a '
      f'computation across processes failed ({first_line}). Another process '
      'probably died or became unreachable: check its log, then rerun the job; '
      'it resumes from the newest checkpoint.\n')
  sys.stderr.flush()
  os._exit(1)
