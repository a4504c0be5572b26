"""A short trial of a long config runs with its warmup clipped instead of
being refused; a config the model cannot run is refused in one line that
says what to set."""

import json

import pytest

from sctd_jax import config as config_lib
from sctd_jax import step as step_lib

THREE_LAYERS = (
    'config key token_drop.first_layer=-1 is invalid: -1 picks layer 0 '
    '(model.num_layers // 2 - 1) for model.num_layers=3, but the layer must be '
    'in [1, 1] so at least one full layer comes before it and after the dropped '
    'ones; set token_drop.first_layer=1.')


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


def test_three_layers_with_the_default_drop_layers_say_what_to_set():
  c = config_lib.base_config()
  c.model.num_layers = 3
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(c)
  assert str(error.value) == THREE_LAYERS
  c.token_drop.first_layer = 1  # What the message asks for is accepted.
  config_lib.validate(c)
  assert config_lib.drop_layers(c) == (1, 1)



def test_a_saved_config_from_before_later_keys_reads_with_what_they_meant():
  """An older run's config.json lacks keys added since: model.scan_layers
  then meant per-layer params (not today's scanned default), dropout masks
  were threefry2x32's (not today's 'auto'), data.workers the default; the
  run's own values win."""
  values = json.loads(config_lib.base_config().to_json())
  del values['model']['scan_layers'], values['data']['workers']
  del values['train']['dropout_prng']
  values['model']['hidden_size'] = 48
  c = config_lib.saved(values)
  assert c.model.scan_layers is False and config_lib.base_config().model.scan_layers
  assert c.train.dropout_prng == 'threefry2x32' != config_lib.base_config().train.dropout_prng
  assert c.data.workers == config_lib.base_config().data.workers
  assert c.model.hidden_size == 48
  values['model']['scan_layers'] = True
  assert config_lib.saved(values).model.scan_layers is True
