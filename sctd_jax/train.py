"""Pretraining: `python -m sctd_jax.train --config configs/tiny.py --workdir DIR`.

Config overrides follow `ml_collections.config_flags`, e.g.
`--config.method=token_drop --config.train.num_steps=100`.
"""

import json
import os
import shlex
import sys
import time

from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from sctd_jax import checkpointing
from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax.data import tokenizer as tokenizer_lib
from sctd_jax import drift as drift_lib
from sctd_jax import faults
from sctd_jax.hf import load as hf_load
from sctd_jax import metrics_log
from sctd_jax import models
from sctd_jax import paths
from sctd_jax import sharding
from sctd_jax import step as step_lib
from sctd_jax import token_drop


def resolve_vocab_size(config, tokenizer) -> int:
  """model.vocab_size: the tokenizer's size, or a larger explicit size."""
  size = len(tokenizer)
  if config.model.vocab_size == -1:
    return size
  if config.model.vocab_size < size:
    raise config_lib.ConfigError(
        f'config key model.vocab_size={config.model.vocab_size} is smaller than '
        f'the tokenizer ({size} tokens); use -1 to take the tokenizer size.')
  return config.model.vocab_size


def workdir_tokenizer(config, workdir: str):
  """load_or_fit_tokenizer on `workdir/tokenizer/`, through a local copy when
  the workdir is in a bucket (HF tokenizers read and write local folders)."""
  folder = paths.resolve(workdir) / 'tokenizer'
  existed = folder.exists()
  with paths.local_copy(folder) as local:
    tokenizer = tokenizer_lib.load_or_fit_tokenizer(config, os.path.dirname(local))
    if paths.is_remote(folder) and not existed:
      paths.copy_folder(local, folder)
  return tokenizer


def shared_tokenizer(config, workdir: str):
  """Process 0 loads or fits the tokenizer and saves it in the workdir (a
  filesystem or bucket all processes share); the others then load that one."""
  if jax.process_index() == 0:
    tokenizer = workdir_tokenizer(config, workdir)
  multihost_utils.sync_global_devices('tokenizer saved')
  if jax.process_index() != 0:
    tokenizer = workdir_tokenizer(config, workdir)
  return tokenizer


def saved_config(workdir: str):
  """The config in workdir/config.json as the run wrote it, or None."""
  saved = paths.resolve(workdir) / 'config.json'
  return config_lib.saved(json.loads(saved.read_text())) if saved.exists() else None


def keep_dropout_prng(config, previous) -> None:
  """Sets train.dropout_prng to the implementation this run draws its
  dropout masks with, so that config.json names it and a resumed run goes on
  as it began: a new run (`previous` None) resolves 'auto'
  (step.dropout_prng), a resumed one keeps the name in `previous`, its
  config.json (threefry2x32 if written before the key). Another explicit
  name than the run's is refused: it would change the masks halfway."""
  name = step_lib.dropout_prng(config.train.dropout_prng)
  if previous is not None:
    ran = step_lib.dropout_prng(previous.train.dropout_prng)
    config_lib.check(config.train.dropout_prng in ('auto', ran), 'train.dropout_prng',
                     config.train.dropout_prng,
                     f'this run drew its dropout masks with {ran}; resume it with '
                     f'--config.train.dropout_prng={ran} (or auto), or start a new workdir')
    if ran != name:
      logging.info('Resuming with the dropout masks the run began with: %s.', ran)
    name = ran
  with config.unlocked():
    config.train.dropout_prng = name


def warn_changed_config(before, config, workdir: str, step: int) -> None:
  """A rerun resumes whatever config it is given (a longer run, another
  topology), so a mistaken one, e.g. another method in the same workdir,
  would silently go on from this run's checkpoint: say what changed."""
  changed = config_lib.differences(before, config)
  if changed:
    logging.warning('Resuming %s at step %d with a config that differs from the one '
                    'in its config.json (rewritten now): %s. To train another '
                    'variant instead, give it a new --workdir.',
                    workdir, step, '; '.join(changed))


def setup(config, workdir: str, mesh):
  """Tokenizer, model, and the train state laid out on `mesh`: fresh, or
  restored from the newest readable checkpoint. Returns (tokenizer, model,
  state, state shardings, data state, checkpointer); process 0 writes
  workdir/config.json once the config is known to fit."""
  config_lib.validate(config)
  hf_load.adopt_shape(config)
  if (warning := config_lib.clip_warmup(config)):
    logging.warning(warning)
  cli.output_dir(workdir, '--workdir', cli.PRETRAINING)
  if paths.is_remote(workdir):
    paths.resolve(workdir).mkdir(parents=True, exist_ok=True)
  tokenizer = shared_tokenizer(config, workdir)
  vocab_size = resolve_vocab_size(config, tokenizer)
  with config.unlocked():
    config.model.vocab_size = vocab_size
  checkpointer = checkpointing.Checkpointer(workdir, config.train.keep_checkpoints,
                                            config.train.keep_every)
  if jax.process_index() == 0:  # A save the last run did not finish.
    faults.remove_partial_saves(checkpointer.directory)
  previous = saved_config(workdir) if checkpointer.steps() else None
  # Before the model, whose dropout layers draw with it.
  keep_dropout_prng(config, previous)
  model = models.BertForMaskedLM(step_lib.model_config(config, vocab_size))
  allow, deny = tokenizer_lib.special_ids(tokenizer)
  importance = token_drop.init_importance(vocab_size, allow, deny,
                                          config.token_drop.importance_init)
  state, state_sharding = step_lib.create_sharded_train_state(
      config, model, importance, jax.random.PRNGKey(config.seed), mesh)
  restored = checkpointer.restore(state, checkpointing.model_shape(config))
  data_state = {'position': 0}
  if restored is not None:
    state, data_state = restored
  elif config.init_from:
    state = hf_load.warm_start(config, model, tokenizer, state)
  if jax.process_index() == 0:
    metrics_log.truncate_metrics(workdir, int(state.step))
    if restored is not None and previous is not None:
      warn_changed_config(previous, config, workdir, int(state.step))
    (paths.resolve(workdir) / 'config.json').write_text(config.to_json(indent=2, sort_keys=True))
  return tokenizer, model, state, state_sharding, data_state, checkpointer


def evaluate(eval_step, state, batches, method: str) -> dict:
  """Validation MLM loss of the full path and, unless baseline, the dropped path."""
  sums = [jax.device_get(eval_step(state, b)) for b in batches]
  count = max(sum(s['count'] for s in sums), 1.0)
  out = {'val_mlm_full': float(sum(s['full'] for s in sums) / count)}
  if method != 'baseline':
    out['val_mlm_drop'] = float(sum(s['drop'] for s in sums) / count)
  return out


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains to `train.num_steps`, resuming from the newest checkpoint in
  `workdir`; SIGTERM or Ctrl-C saves and returns. Returns the last row and
  prints a summary of the run. A full disk or device memory ends it with one
  faults.DiskFull/OutOfMemory."""
  with faults.Guard(config, checkpointing.checkpoint_dir(workdir)) as guard:
    return _train_and_evaluate(config, workdir, guard)


def _train_and_evaluate(config, workdir: str, guard: faults.Guard) -> dict:
  run_started = time.perf_counter()
  cli.use_compilation_cache()
  mesh = sharding.make_mesh(config.mesh)
  tokenizer, model, state, state_sharding, data_state, checkpointer = setup(
      config, workdir, mesh)
  sharding.log_platform(config, step_lib.compute_dtype(config.model.dtype))
  position = data_state['position']
  guard.state_size = faults.state_bytes(state)
  if jax.process_index() == 0:
    faults.warn_if_low_disk(checkpointer.directory, guard.state_size,
                            config.train.keep_checkpoints)
  batch_sharding = sharding.batch_sharding(mesh)
  to_global = lambda b: sharding.global_batch(b, batch_sharding, config.train.batch_size)
  t = config.train
  first_step = int(state.step)
  logging.info('%s: %s parameters, method %s, %s at step %d', workdir,
               f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
               config.method, 'resuming' if first_step else 'starting', first_step)
  entropy = pipeline.unigram_entropy(
      sources.make_source(config, tokenizer, 'validation'))
  logging.info('Unigram entropy of the validation tokens: %.3f nats (a model '
               'that ignores context scores this MLM loss).', entropy)
  eval_step = step_lib.make_eval_step(model, config)
  val = pipeline.batches(config, tokenizer, 'validation')
  eval_batches = [to_global(next(val)) for _ in range(t.eval_batches)]
  drift = drift_lib.make_drift(config, model, tokenizer)
  train_batches = pipeline.batches(config, tokenizer, 'train', data_state,
                                   workers=config.data.workers)

  batch = to_global(next(train_batches))
  started = time.perf_counter()
  # Compiled ahead of time: a batch of another shape fails loudly instead of
  # silently recompiling.
  train_step = step_lib.make_train_step(
      model, config, (state_sharding, batch_sharding, NamedSharding(mesh, P()))
  ).lower(state, batch).compile()
  compile_s = time.perf_counter() - started
  logging.info('Compiled train_step in %.1f s.', compile_s)
  guard.memory_estimate = faults.check_memory(train_step, config)
  peak, peak_source = cost_model.peak_flops()
  logging.info('MFU is against %.3g FLOP/s (%s).', peak, peak_source)

  shape = checkpointing.model_shape(config)
  tracker = metrics_log.start_wandb(config, workdir) if jax.process_index() == 0 else None
  stop = checkpointing.StopRequest()
  reporter = metrics_log.Reporter(workdir, first_step, t.num_steps,
                                  enabled=jax.process_index() == 0,
                                  unigram_entropy=entropy)
  tokens_per_step = t.batch_size * config.data.seq_len
  skips = faults.SkipCounter(t.max_skipped)
  watchdog = faults.Watchdog(t.step_timeout_s, checkpointer.directory)
  pending, last_time, row, data_wait = [], time.perf_counter(), {}, 0.0
  saved = first_step or None  # A resumed run restored that checkpoint.
  stopping = False
  try:
    watchdog.start()
    for done in range(first_step + 1, t.num_steps + 1):
      state, metrics = train_step(state, batch)
      watchdog.beat(done, metrics)
      position += t.batch_size
      pending.append(metrics)
      reporter.advance()
      stopping = stop.agreed(state.step)  # Read once: a signal may land mid-iteration.
      evaluating = done % t.eval_every == 0 or done == t.num_steps
      saving = done % t.checkpoint_every == 0 or done == t.num_steps or stopping
      # Rows are written (and losses checked for NaN) before any save.
      if done % t.log_every == 0 or evaluating or saving:
        pending = jax.device_get(pending)  # Waits for the steps to finish.
        seconds = time.perf_counter() - last_time
        row = metrics_log.summarize(done, pending, seconds, tokens_per_step)
        row.update(cost_model.utilization(cost_model.interval_flops(
            config, len(pending), row['sctd_step']), seconds, peak))
        row['data_wait_s'] = data_wait / len(pending)  # Per step, as step_time_s.
        if evaluating:
          row.update(evaluate(eval_step, state, eval_batches, config.method))
          if drift:
            row.update(drift(state))
        reporter.write(row)
        skips.update(done, [m['skipped'] for m in pending])
        if tracker:
          metrics_log.wandb_log(tracker, row)
        pending, last_time, data_wait = [], time.perf_counter(), 0.0
      if saving:
        checkpointer.save(done, state, train_batches.checkpoint(position), shape)
        saved = done
      if stopping:
        break
      if done < t.num_steps:
        waited = time.perf_counter()
        local_batch = next(train_batches)
        # Dispatch is asynchronous: while a dispatched step still runs, the
        # wait costs nothing. Once it has finished, the device idles for data
        # (for at most this long).
        if jax.tree.leaves(metrics)[0].is_ready():
          data_wait += time.perf_counter() - waited
        batch = to_global(local_batch)
  finally:
    watchdog.stop()
    checkpointer.wait()
    checkpointer.close()
    stop.restore_handlers()
    reporter.close()
    if tracker:
      tracker.finish()
  if reporter.enabled:
    print(metrics_log.run_summary(
        workdir, row.get('step', first_step), t.num_steps, first_step,
        time.perf_counter() - run_started, compile_s, reporter.last_eval, entropy,
        reporter.mean_tokens_per_s(tokens_per_step),
        saved and str(checkpointer.directory / str(saved)),
        stop.reason if stopping else None, _rerun_command(), t.eval_every),
        file=sys.stderr, flush=True)
  elif stopping:  # Each task's own log says why it stopped, and where.
    logging.warning('Stopped by %s after step %d of %d (process %d); checkpoint %s.',
                    stop.reason, done, t.num_steps, jax.process_index(),
                    checkpointer.directory / str(saved))
  return row


def _rerun_command() -> str | None:
  """This process's command line if it is this CLI: rerunning it resumes."""
  if not sys.argv or not sys.argv[0].endswith(os.path.join('sctd_jax', 'train.py')):
    return None
  return ' '.join(['python -m sctd_jax.train', *map(shlex.quote, sys.argv[1:])])


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Config file with get_config(), e.g. configs/tiny.py.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory of the run.')


def main(argv):
  del argv
  config = flags.FLAGS.config
  config_lib.validate(config)
  sharding.maybe_initialize_distributed(config.mesh.init_timeout_s,
                                        config.mesh.heartbeat_timeout_s)
  try:
    train_and_evaluate(config, flags.FLAGS.workdir)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    sharding.exit_after_peer_failure(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['config', 'workdir'])
