"""data_wait_s: the time the device idles for want of a batch, and the tiny
config on the synthetic corpus never making it idle."""

import json
import runpy
import time

from sctd_jax import train
from sctd_jax.data import pipeline
from conftest import tiny_config
from test_train import ROOT


def rows(workdir):
  return [json.loads(line) for line in open(workdir / 'metrics.jsonl')]


class Late:
  """The batches of `real`, each 0.3 s late."""

  def __init__(self, real):
    self.real, self.checkpoint = real, real.checkpoint

  def __next__(self):
    time.sleep(0.3)
    return next(self.real)


def test_a_slow_pipeline_is_counted(tmp_path, monkeypatch):
  """Each training batch arrives 0.3 s late: a tiny model's step is done
  long before, so the device idles that long per step."""
  batches = pipeline.batches
  monkeypatch.setattr(pipeline, 'batches', lambda config, tokenizer, split='train', *args,
                      **kwargs: (Late if split == 'train' else lambda b: b)(
                          batches(config, tokenizer, split, *args, **kwargs)))
  config = tiny_config(**{'train.num_steps': 9, 'train.log_every': 3, 'train.eval_every': 9,
                          'data.vocab_size': 300, 'data.tokenizer_docs': 200,
                          'drift.sentences': 0, 'model.vocab_size': -1,
                          'model.num_layers': 2, 'method': 'baseline'})
  train.train_and_evaluate(config, str(tmp_path))
  # After the first row (whose first steps run slower than a wait): one
  # wait per step, each counted in full and once (two would be 0.6 s); the
  # margin above 0.3 s is for a loaded machine.
  later = rows(tmp_path)[1:]
  assert len(later) == 2
  for row in later:
    assert 0.3 <= row['data_wait_s'] < 0.45 and row['data_wait_s'] < row['step_time_s'], row


def test_tiny_run_does_not_wait_for_synthetic_data(tmp_path):
  """The README's first command (configs/tiny.py, synthetic corpus): after
  the first logged interval, the device waits for data under 5% of a step
  (a loaded 2-core machine shares its cores between the step and the
  batches)."""
  config = runpy.run_path(f'{ROOT}/configs/tiny.py')['get_config']()
  config.train.update(num_steps=30, log_every=10, eval_every=30, checkpoint_every=30)
  train.train_and_evaluate(config, str(tmp_path))
  later = rows(tmp_path)[1:]
  assert len(later) == 2
  wait = sum(r['data_wait_s'] for r in later) / len(later)
  step = sum(r['step_time_s'] for r in later) / len(later)
  assert wait < 0.05 * step, later
