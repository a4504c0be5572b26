"""Pretraining: `python -m sctd_jax.train --config configs/tiny.py --workdir DIR`.

Config overrides follow `ml_collections.config_flags`, e.g.
`--config.method=token_drop --config.train.num_steps=100`.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from sctd_jax import config as config_lib
from sctd_jax import input_pipeline
from sctd_jax import models
from sctd_jax import reporting
from sctd_jax import step as step_lib
from sctd_jax import token_drop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file with get_config(), e.g. configs/tiny.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run.')

# Compiled programs outlive the process, so a restart does not recompile.
COMPILATION_CACHE = os.environ.get(
    'SCTD_JAX_COMPILATION_CACHE',
    os.path.join(os.path.expanduser('~'), '.cache', 'sctd_jax', 'xla'))


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


def setup(config, workdir: str):
  """Tokenizer, model and a fresh train state; writes workdir/config.json."""
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  tokenizer = input_pipeline.load_or_fit_tokenizer(config, workdir)
  vocab_size = resolve_vocab_size(config, tokenizer)
  with config.unlocked():
    config.model.vocab_size = vocab_size
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  model = models.BertForMaskedLM(models.BertConfig.from_config(config, vocab_size))
  allow, deny = input_pipeline.special_ids(tokenizer)
  importance = token_drop.init_importance(vocab_size, allow, deny,
                                          config.token_drop.importance_init)
  state = step_lib.create_train_state(config, model, importance,
                                      jax.random.PRNGKey(config.seed))
  return tokenizer, model, state


def evaluate(eval_step, state, batches, method: str) -> dict:
  """Validation MLM loss of the full path and, unless baseline, the dropped path."""
  sums = [jax.device_get(eval_step(state, b)) for b in batches]
  count = max(sum(s['count'] for s in sums), 1.0)
  out = {'val_mlm_full': float(sum(s['full'] for s in sums) / count)}
  if method != 'baseline':
    out['val_mlm_drop'] = float(sum(s['drop'] for s in sums) / count)
  return out


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains to `train.num_steps`; returns the last metrics row."""
  jax.config.update('jax_compilation_cache_dir', COMPILATION_CACHE)
  tokenizer, model, state = setup(config, workdir)
  t = config.train
  logging.info('%s: %s parameters, method %s', workdir,
               f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
               config.method)

  eval_step = step_lib.make_eval_step(model, config)
  val = input_pipeline.batches(config, tokenizer, 'validation')
  eval_batches = [next(val) for _ in range(t.eval_batches)]
  train_batches = input_pipeline.batches(config, tokenizer, 'train',
                                         start=int(state.step))

  batch = next(train_batches)
  started = time.perf_counter()
  # Compiled ahead of time: a batch of another shape fails loudly instead of
  # silently recompiling.
  train_step = step_lib.make_train_step(model, config).lower(state, batch).compile()
  logging.info('Compiled train_step in %.1f s.', time.perf_counter() - started)

  reporter = reporting.Reporter(workdir, int(state.step), t.num_steps)
  tokens_per_step = t.batch_size * config.data.seq_len
  pending, last_time, row = [], time.perf_counter(), {}
  try:
    for done in range(int(state.step) + 1, t.num_steps + 1):
      state, metrics = train_step(state, batch)
      pending.append(metrics)
      reporter.advance()
      evaluating = done % t.eval_every == 0 or done == t.num_steps
      if done % t.log_every == 0 or evaluating:
        pending = jax.device_get(pending)  # Waits for the steps to finish.
        row = reporting.summarize(done, pending, time.perf_counter() - last_time,
                                  tokens_per_step)
        if evaluating:
          row.update(evaluate(eval_step, state, eval_batches, config.method))
        reporter.write(row)
        pending, last_time = [], time.perf_counter()
      if done < t.num_steps:
        batch = next(train_batches)
  finally:
    reporter.close()
  return row


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as e:
    raise app.UsageError(str(e)) from None
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
