"""Orbax checkpoints of the whole run, resume, and preemption safety.

One checkpoint holds everything the next step needs: params, optimizer state,
step, token-importance table and RNG key (the train state), the data
iterator's position (JSON, a global sample count independent of the number of
processes), and the model shape it was trained with (JSON, to refuse a
mismatching config with a readable message). The resolved config and the
tokenizer live beside it in the workdir.
"""

import os
import signal
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import models
from sctd_jax import paths
from sctd_jax import scan_layers

SHAPE_KEYS = ('vocab_size', 'hidden_size', 'num_layers', 'num_heads',
              'intermediate_size', 'max_position_embeddings', 'type_vocab_size')


class CheckpointMismatch(cli.UserError):
  """A checkpoint written for another model shape or vocabulary."""


def checkpoint_dir(workdir: str):
  """workdir/checkpoints, local or in a bucket (`paths.resolve`)."""
  return paths.resolve(workdir) / 'checkpoints'


def model_shape(config) -> dict:
  """The SHAPE_KEYS and, when model.scan_layers stacks some run, the runs
  whose params the checkpoint holds (their split follows the token_drop
  layers); absent, the per-layer layout of unscanned (and older) runs."""
  shape = {k: config.model[k] for k in SHAPE_KEYS}
  first, last = config_lib.drop_layers(config)
  runs = scan_layers.layer_runs(models.BertConfig(
      vocab_size=1, num_layers=config.model.num_layers,
      scan_layers=config.model.scan_layers, first_drop_layer=first, last_drop_layer=last))
  if any(run.stacked for run in runs):
    shape['layer_runs'] = [run.name for run in runs]
  return shape


class Checkpointer:
  """`workdir/checkpoints/<step>/{state, data, shape}` through one
  `ocp.CheckpointManager`; saves are asynchronous (the call returns once
  arrays are copied to host). The newest `keep` checkpoints are kept and,
  with `keep_every` > 0, every checkpoint of a step divisible by it, for
  curves over training (paper Table 2, Figure 6)."""

  def __init__(self, workdir: str, keep: int, keep_every: int = 0):
    self.directory = checkpoint_dir(workdir)
    policy = ocp.checkpoint_managers.LatestN(keep)
    if keep_every > 0:
      policy = ocp.checkpoint_managers.AnyPreservationPolicy(
          [policy, ocp.checkpoint_managers.EveryNSteps(keep_every)])
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'data', 'shape'),
        options=ocp.CheckpointManagerOptions(preservation_policy=policy,
                                             create=True))

  def save(self, step: int, state, data_state: dict, shape: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        shape=ocp.args.JsonSave(shape)))

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, shape: dict, step: int | None = None,
              quarantine: bool = True):
    """(state, data_state) of `step`, or of the newest readable checkpoint.

    An unreadable checkpoint is moved aside (never deleted; with
    `quarantine=False`, as readers such as export want, left in place) with
    a warning and the previous one is tried; a checkpoint of another model
    shape is refused. Returns None when there is no checkpoint."""
    steps = [step] if step is not None else self.steps()[::-1]
    for s in steps:
      try:
        saved = self.manager.restore(s, args=ocp.args.Composite(
            shape=ocp.args.JsonRestore()))['shape']
      except Exception as e:  # Orbax raises many types for damaged files.
        self._unreadable(s, e, quarantine)
        continue
      _check_shape(saved, shape, str(self.directory / str(s)))
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
      except Exception as e:
        if step is not None:
          raise
        self._unreadable(s, e, quarantine)
        continue
      logging.info('Restored checkpoint %s/%d.', self.directory, s)
      return out['state'], out['data']
    return None

  def _unreadable(self, step: int, error: Exception, quarantine: bool) -> None:
    path = self.directory / str(step)
    aside = path.parent / f'{path.name}.unreadable-{int(time.time())}'
    logging.warning('Checkpoint %s is unreadable (%s: %s); %s and trying the '
                    'previous one.', path, type(error).__name__,
                    str(error).splitlines()[0][:200] if str(error) else '',
                    f'moved it to {aside}' if quarantine else 'left it in place')
    if quarantine and path.exists():
      path.rename(aside)
      self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _check_shape(saved: dict, current: dict, where: str) -> None:
  keys = [*current, *(k for k in saved if k not in current)]
  diffs = [f'{k}: checkpoint {saved.get(k)} vs config {current.get(k)}'
           for k in keys if saved.get(k) != current.get(k)]
  if diffs:
    layout = (' (layer_runs follows model.scan_layers and token_drop.first_layer'
              ' and last_layer)' if saved.get('layer_runs') != current.get('layer_runs')
              else '')
    raise CheckpointMismatch(
        f'The checkpoint {where} was trained with another model shape '
        f'({"; ".join(diffs)}). Use a new --workdir for a new model, or '
        f'restore the original model.* values{layout}.')


class StopRequest:
  """Turns SIGTERM (schedulers' preemption notice) and Ctrl-C into a stop that
  every process agrees on, so that all of them save the same step and exit.

  A notice often reaches one host first. With several processes, `agreed`
  all-reduces every process's flag after each step (a max over one int32 per
  device, dispatched asynchronously and read one step later, so it never
  stalls the device queue); all processes read the same value at the same
  step, so they stop after the same step. A second signal stops at once."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}
    self._any_process = _any_process_fn() if jax.process_count() > 1 else None
    self._pending = None
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None:  # Second signal: stop at once.
      signal.signal(signum, self._previous[signum])
      os.kill(os.getpid(), signum)
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: finishing this step, then saving.', self.signal_name)

  def __bool__(self):
    return self.signal_name is not None

  @property
  def reason(self) -> str:
    return self.signal_name or 'a signal to another process'

  def agreed(self, step) -> bool:
    """Whether every process stops after the step just dispatched. `step` is
    that step's (device) step counter: the all-reduce waits for it, so every
    process runs its collectives in the same order."""
    if self._any_process is None:
      return bool(self)
    previous, self._pending = self._pending, self._any_process(bool(self), step)
    return previous is not None and bool(previous.addressable_data(0))

  def restore_handlers(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _any_process_fn():
  """f(flag, step) -> replicated int32 array: 1 if any process's flag is set."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('process',))
  per_device = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('process'))
  reduce = jax.jit(lambda flags, step: jnp.max(flags) + 0 * step.astype(jnp.int32),
                   out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

  def any_process(flag: bool, step):
    flags = jax.make_array_from_process_local_data(
        per_device, np.full(jax.local_device_count(), flag, np.int32),
        (jax.device_count(),))
    return reduce(flags, step)
  return any_process
