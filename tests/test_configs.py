"""Every shipped config loads and validates with the values its docstring
promises (test_scripts.py parses the shell scripts); the learning-rate
schedule against the polynomial-decay formula written out by hand."""

import importlib.util
import os

import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import step as step_lib
from test_train import ROOT


def _load(name):
  spec = importlib.util.spec_from_file_location(
      f'configs_{name}', os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# name -> (hidden, layers, heads, intermediate, drop layers (first, last)).
PRETRAINING = {
    'bert_base': (768, 12, 12, 3072, (5, 10)),
    'bert_large': (1024, 24, 16, 4096, (11, 22)),
    'experiment': (128, 6, 4, 512, (2, 4)),
}


@pytest.mark.parametrize('name', sorted(PRETRAINING))
def test_pretraining_config_validates_with_its_shape(name):
  c = _load(name)
  # Real-scale runs may come to require a corpus: give them a local one.
  c.data.source = 'files:/data/corpus/*.jsonl'
  c.data.validation_fraction = 0.01
  config_lib.validate(c)
  m = c.model
  assert (m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size,
          config_lib.drop_layers(c)) == PRETRAINING[name]


def test_bert_base_is_the_papers_recipe():
  """Section 4.1: 250K steps of batch 1024 at seq 512, peak lr 2e-4 after 25K
  warmup steps, AdamW (0.9, 0.999, 1e-6), weight decay 0.01, keep 0.5,
  Fi 10, lambda 0.05."""
  c = _load('bert_base')
  t = c.train
  assert (t.num_steps, t.batch_size, c.data.seq_len) == (250_000, 1024, 512)
  assert (t.learning_rate, t.warmup_steps, t.weight_decay) == (2e-4, 25_000, 0.01)
  assert (t.adam_b1, t.adam_b2, t.adam_eps) == (0.9, 0.999, 1e-6)
  assert (c.token_drop.keep_rate, c.sctd.fi, c.sctd.lam) == (0.5, 10, 0.05)


# name -> (hidden, layers, seq_len, steps, drop layers): what the README and
# config_lib.bench_config's docstring promise.
SMALL_CONFIGS = {'tiny': (128, 4, 64, 1200, (1, 2)), 'bench': (256, 12, 128, 250_000, (5, 10))}


@pytest.mark.parametrize('name', sorted(SMALL_CONFIGS))
def test_small_configs_validate_as_shipped_with_their_shape(name):
  """As shipped: SCTD on the built-in corpus, no corpus to give."""
  c = _load(name)
  config_lib.validate(c)
  assert (c.method, c.data.source) == ('sctd', 'synthetic')
  assert (c.model.hidden_size, c.model.num_layers, c.data.seq_len, c.train.num_steps,
          config_lib.drop_layers(c)) == SMALL_CONFIGS[name]


@pytest.mark.parametrize('power, end', [(1.0, 0.0), (2.0, 0.1), (0.5, 0.02)])
def test_learning_rate_schedule_is_warmup_then_polynomial_decay(power, end):
  c = config_lib.base_config()
  c.train.update(learning_rate=1.0, warmup_steps=10, num_steps=110, lr_power=power,
                 end_learning_rate=end)
  config_lib.validate(c)
  schedule = step_lib.pretraining_schedule(c.train)
  steps = np.arange(0, 131)
  # lr(t) = t/10 for t < 10, then end + (1 - end) (1 - (t-10)/100)^power,
  # and end after the last step.
  frac = np.clip((steps - 10) / 100, 0, 1)
  want = np.where(steps < 10, steps / 10, end + (1 - end) * (1 - frac) ** power)
  np.testing.assert_allclose([float(schedule(s)) for s in steps], want, rtol=1e-6, atol=1e-7)
