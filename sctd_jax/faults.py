"""The faults a long run meets, each turned into one line that says what to do.

- Non-finite losses: `train.on_nonfinite='skip'` makes the compiled step keep
  the state of a step whose loss or gradient is not finite (`keep_if_finite`);
  the loop counts consecutive skips on the host (`SkipCounter`), only where it
  already waits for results, and stops after `train.max_skipped`.
- Full disks: the checkpoint size is known from the state's shapes
  (`state_bytes`); a start with too little free space warns, a save that
  fails on a full disk removes its partial directory and ends the run with
  `DiskFull`.
- Out of memory: the compiled step's memory analysis is compared with the
  device's memory before step 1 (`check_memory`); that, or XLA's
  RESOURCE_EXHAUSTED, ends the run with `OutOfMemory` and the knobs that help.
- Hung steps: `Watchdog` warns when a step takes far longer than the running
  median and exits the process after `train.step_timeout_s`.

`Guard` turns a disk-full or out-of-memory error raised anywhere in a run into
its one-line `cli.UserError`. docs/troubleshooting.md lists each symptom.
"""

import errno
import logging as pylogging
import os
import shutil
import statistics
import sys
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import tqdm

from sctd_jax import cli
from sctd_jax import paths
from sctd_jax import metrics_log

# Overrides the device memory `check_memory` compares with, in bytes: to
# keep headroom, or to test the check where JAX exposes no limit (CPU).
DEVICE_MEMORY_ENV = 'SCTD_JAX_DEVICE_MEMORY'
# Orbax writes a save into `<step>.orbax-checkpoint-tmp...` and renames it when done.
PARTIAL_SAVE_MARK = '.orbax-checkpoint-tmp'
# A step slower than SLOW_FACTOR x the running median (and MIN_WARN_S) is
# reported as slow.
SLOW_FACTOR = 10.0
MIN_WARN_S = 5.0


class DiskFull(cli.UserError):
  """A save or a log write found no space left on the workdir's disk."""


class OutOfMemory(cli.UserError):
  """The train step does not fit in device memory."""


def _human_size(n: float) -> str:
  """`n` bytes in KB, MB or GB (powers of 1024), one decimal."""
  for unit, size in (('GB', 2**30), ('MB', 2**20)):
    if n >= size:
      return f'{n / size:,.1f} {unit}'
  return f'{n / 2**10:,.1f} KB'


# ---------------------------------------------------------------- non-finite


def keep_if_finite(state, update, loss, grad_norm):
  """(new state, skipped): `update(state)`, or `state` with only its step
  counter advanced when the loss or the gradient norm is not finite, so a
  bad batch leaves params, optimizer state and importance table untouched.
  A `lax.cond` inside the compiled step: no recompile, no host sync."""
  finite = jnp.logical_and(jnp.isfinite(loss), jnp.isfinite(grad_norm))
  new_state = jax.lax.cond(finite, update,
                           lambda s: s.replace(step=s.step + 1), state)
  return new_state, jnp.logical_not(finite)


class SkipCounter:
  """Counts consecutive skipped steps from the per-step flags the loop
  fetches anyway, and stops the run after `max_skipped` of them."""

  def __init__(self, max_skipped: int):
    self.max_skipped = max_skipped
    self.consecutive = 0

  def update(self, last_step: int, skipped) -> None:
    """`skipped`: one flag per step, for the steps ending at `last_step`."""
    first = last_step - len(skipped) + 1
    for step, flag in enumerate(skipped, start=first):
      self.consecutive = self.consecutive + 1 if flag else 0
      if self.consecutive >= self.max_skipped:
        raise metrics_log.NonFiniteLoss(
            f'{self.consecutive} consecutive steps (up to step {step}) had a '
            'non-finite loss or gradient and were skipped '
            f'(train.max_skipped={self.max_skipped}). Lower '
            'train.learning_rate or set train.grad_clip_norm; the '
            'checkpoints in the workdir hold no skipped update.')


# ---------------------------------------------------------------- disk


def state_bytes(state) -> int:
  """Bytes of the train state's arrays: what a checkpoint holds, without
  Orbax's metadata."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)
             if hasattr(x, 'dtype'))


def checkpoint_bytes(directory: str, state_size: int) -> int:
  """Bytes of one checkpoint: the newest complete one's files on disk, or
  `state_size` (from the state's shapes) before the first save."""
  steps = complete_checkpoints(directory)
  if not steps:
    return state_size
  newest = os.path.join(directory, str(steps[-1]))
  return max(state_size, sum(os.path.getsize(os.path.join(root, f))
                             for root, _, files in os.walk(newest)
                             for f in files))


def complete_checkpoints(directory: str) -> list[int]:
  """Steps of the finished checkpoints in `directory`, read from the
  directory itself (no Orbax lock: the watchdog calls it from its thread)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def partial_saves(directory: str) -> list[str]:
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory) if PARTIAL_SAVE_MARK in n)


def remove_partial_saves(directory: str) -> list[str]:
  """Deletes the directories of saves that did not finish (a full disk, a
  kill during a save); finished checkpoints are never touched."""
  removed = partial_saves(directory)
  for name in removed:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
  if removed:
    logging.warning('Removed %s in %s: saves that did not finish.',
                    ', '.join(removed), directory)
  return removed


def warn_if_low_disk(directory: str, state_size: int, keep: int) -> None:
  """Warns when the disk cannot hold `keep` checkpoints plus the one being
  written (Orbax deletes the oldest only after the new one is complete). A
  bucket has no disk to fill."""
  if paths.is_remote(directory):
    return
  missing = keep + 1 - len(complete_checkpoints(directory))
  size = checkpoint_bytes(directory, state_size)
  needed = max(1, missing) * size
  free = shutil.disk_usage(directory).free
  if free < needed:
    logging.warning(
        'Low disk space in %s: %s free, but train.keep_checkpoints=%d '
        'checkpoints of %s (and one being saved) need %s. A save will '
        'fail when the disk fills; free space or lower '
        'train.keep_checkpoints.', directory, _human_size(free), keep,
        _human_size(size), _human_size(needed))


def _chain(error: BaseException):
  """`error` and the exceptions it was raised from or during."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
  """ENOSPC or EDQUOT, from Python (OSError) or TensorStore (its message)."""
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(e)
    if 'No space left on device' in text or 'Disk quota exceeded' in text:
      return True
  return False


def disk_full_message(directory: str, state_size: int | None) -> str:
  """What failed, how much space a save needs and has, and how to go on."""
  steps = complete_checkpoints(directory)
  newest = (f'the newest complete checkpoint is {directory}/{steps[-1]}'
            if steps else 'there is no complete checkpoint yet')
  resume = f'resume from step {steps[-1]}' if steps else 'start again'
  place = directory if os.path.isdir(directory) else os.path.dirname(directory)
  need = (f'a checkpoint needs about '
          f'{_human_size(checkpoint_bytes(directory, state_size))} and '
          if state_size else '')
  return (f'the disk of {directory} is full: {need}'
          f'{_human_size(shutil.disk_usage(place).free)} is free '
          f'(partial saves removed); {newest}. Free space, lower '
          'train.keep_checkpoints or use a --workdir on a larger disk, then '
          f'rerun the same command to {resume}.')


class _QuietDiskFull(pylogging.Filter):
  """Drops the records (with tracebacks) that Orbax's threads and asyncio
  log for a full disk, up to interpreter exit: the run ends with DiskFull's
  one line, which says the same."""

  def filter(self, record):
    error = record.exc_info[1] if record.exc_info else None
    return error is None or not is_disk_full(error)


# ---------------------------------------------------------------- memory


def memory_estimate(compiled) -> int | None:
  """Peak bytes per device of a compiled program (XLA's memory analysis:
  arguments + outputs not aliased to them + temporaries + code)."""
  try:
    m = compiled.memory_analysis()
  except (NotImplementedError, jax.errors.JaxRuntimeError):
    return None
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes -
          m.alias_size_in_bytes + m.temp_size_in_bytes +
          m.generated_code_size_in_bytes)


def device_memory() -> int | None:
  """Bytes one local device can hold: $SCTD_JAX_DEVICE_MEMORY, else the
  smallest `bytes_limit` JAX reports (GPU, TPU), else None (CPU)."""
  if os.environ.get(DEVICE_MEMORY_ENV):
    return int(float(os.environ[DEVICE_MEMORY_ENV]))
  limits = [(d.memory_stats() or {}).get('bytes_limit')
            for d in jax.local_devices()]
  limits = [x for x in limits if x]
  return min(limits) if limits else None


def out_of_memory_message(config, estimate: int | None,
                          limit: int | None) -> str:
  """The estimate against the device, and the knobs that lower it."""
  t, fsdp = config.train, config.mesh.fsdp
  need = (f'needs about {_human_size(estimate)} per device'
          if estimate else 'ran out of device memory')
  have = f' but a device holds {_human_size(limit)}' if limit else ''
  knobs = [f'train.grad_accum_steps={t.grad_accum_steps * 2} (micro-batches)']
  if not config.model.remat:
    knobs.append('model.remat=True (recompute activations)')
  if fsdp != -1 and jax.device_count() > fsdp:
    knobs.append(f'mesh.fsdp={jax.device_count()} (shard parameters and '
                 'optimizer state over the devices)')
  knobs.append(f'a smaller train.batch_size (now {t.batch_size})')
  return f'the train step {need}{have}. Try ' + ', '.join(knobs) + '.'


def check_memory(compiled, config) -> int | None:
  """Before step 1: raises OutOfMemory when the compiled step cannot fit in
  device memory; returns the estimate (None where XLA gives none)."""
  estimate, limit = memory_estimate(compiled), device_memory()
  if estimate and limit:
    logging.info('The train step needs about %s per device of %s.',
                 _human_size(estimate), _human_size(limit))
    if estimate > limit:
      raise OutOfMemory(out_of_memory_message(config, estimate, limit))
  return estimate


def is_out_of_memory(error: BaseException) -> bool:
  return any(isinstance(e, jax.errors.JaxRuntimeError) and
             'RESOURCE_EXHAUSTED' in str(e) for e in _chain(error))


class Guard:
  """Context for a run: a full disk or an out-of-memory error raised inside
  (by a save, a log write, a compile or a step) leaves it as one DiskFull or
  OutOfMemory line; other errors pass unchanged. `state_size` and
  `memory_estimate`, set once known, make the messages quote them."""

  def __init__(self, config, checkpoint_dir: str):
    self.config = config
    self.checkpoint_dir = checkpoint_dir
    self.state_size = None  # Bytes of the train state, once it is known.
    self.memory_estimate = None
    self._filter = _QuietDiskFull()

  def __enter__(self):
    logging.get_absl_handler().addFilter(self._filter)
    return self

  def __exit__(self, kind, error, traceback):
    del kind, traceback
    if error is None or not is_disk_full(error):
      logging.get_absl_handler().removeFilter(self._filter)
    if error is None or isinstance(error, cli.UserError):
      return False
    if is_disk_full(error):
      if jax.process_index() == 0:
        remove_partial_saves(self.checkpoint_dir)
      raise DiskFull(disk_full_message(self.checkpoint_dir,
                                       self.state_size)) from None
    if is_out_of_memory(error):
      logging.warning('%s', str(error).splitlines()[0][:500])
      raise OutOfMemory(out_of_memory_message(
          self.config, self.memory_estimate, device_memory())) from None
    return False


# ---------------------------------------------------------------- hangs


class Watchdog:
  """Per-step heartbeats checked by a thread: a step far slower than the
  running median is logged, one that exceeds `timeout_s` ends the process.

  `beat(metrics)` is called after each step is dispatched and waits for the
  previous step's results, so one step stays queued on the device while the
  host measures the one before. A stuck collective cannot be interrupted
  from Python, hence `os._exit` after the message. `timeout_s` 0 disables
  it all (no thread, no waits)."""

  def __init__(self, timeout_s: float, checkpoint_dir: str):
    self.timeout_s = timeout_s
    self.checkpoint_dir = checkpoint_dir
    self.durations = []
    self._previous = None
    self._last = time.monotonic()
    self._warned = False
    self._step = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name='step-watchdog')

  def start(self) -> None:
    if self.timeout_s > 0:
      self._last = time.monotonic()
      self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()

  def beat(self, step: int, metrics) -> None:
    """Step `step` was dispatched: wait for step `step - 1`, record its time."""
    if self.timeout_s <= 0:
      return
    if self._previous is not None:
      jax.block_until_ready(self._previous)
    now = time.monotonic()
    if self._previous is not None:
      self.durations = (self.durations + [now - self._last])[-100:]
    self._previous, self._last, self._warned = metrics, now, False
    self._step = step

  def _watch(self):
    while not self._stop.wait(min(1.0, self.timeout_s / 10)):
      elapsed = time.monotonic() - self._last
      median = statistics.median(self.durations) if self.durations else 0.0
      waiting = f'step {self._step} (or the input of the next)'
      if elapsed > self.timeout_s:
        self._exit(waiting, elapsed, median)
      if not self._warned and elapsed > max(SLOW_FACTOR * median, MIN_WARN_S):
        self._warned = True
        logging.warning(
            'Slow step: %s has taken %.0f s, the median step %.2f s. A host '
            'or a collective may be stuck; the run exits after '
            'train.step_timeout_s=%g s.', waiting, elapsed, median,
            self.timeout_s)

  def _exit(self, waiting: str, elapsed: float, median: float):
    steps = complete_checkpoints(self.checkpoint_dir)
    resume = (f'resume from checkpoint {steps[-1]}' if steps
              else 'start again')
    message = (f'error: {waiting} has not finished after {elapsed:.0f} s '
               f'(train.step_timeout_s={self.timeout_s:g}; the median step '
               f'takes {median:.2f} s). A host, a device or a collective is '
               f'likely stuck: exiting so the job can restart. Rerun the same '
               f'command to {resume}.')
    logging.flush()
    tqdm.tqdm.write(message, file=sys.stderr)  # On its own line, below the bar.
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access
