"""A short trial of a long config runs with its warmup clipped instead of
being refused."""


import pytest

from sctd_jax import config as config_lib
from sctd_jax import step as step_lib



def test_a_warmup_longer_than_the_run_is_clipped_with_a_warning():
  c = config_lib.base_config()
  c.train.update(num_steps=25, warmup_steps=100)
  config_lib.validate(c)  # Not refused.
  message = config_lib.clip_warmup(c)
  assert c.train.warmup_steps == 25
  assert 'train.warmup_steps=100' in message and 'train.num_steps=25' in message
  schedule = step_lib.pretraining_schedule(c.train)
  # Linear warmup to the peak 2e-4 at step 25, by hand: 2e-4 * 10 / 25.
  assert float(schedule(10)) == pytest.approx(8e-5)
  assert float(schedule(25)) == pytest.approx(2e-4)
  assert config_lib.clip_warmup(c) is None  # Fits now: no second warning.


def test_a_negative_warmup_is_refused_naming_the_key():
  c = config_lib.base_config()
  c.train.warmup_steps = -1
  with pytest.raises(config_lib.ConfigError, match='train.warmup_steps=-1'):
    config_lib.validate(c)
