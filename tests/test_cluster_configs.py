"""Configs and installs for real runs: the BERT-base and -large configs need
a corpus, and a BERT-base-sized run on CPUs says so."""

import logging
import runpy

import pytest

from sctd_jax import config as config_lib
from sctd_jax import sharding
from sctd_jax import step as step_lib

from test_train import ROOT


@pytest.mark.parametrize('name', ['bert_base', 'bert_large'])
def test_paper_configs_require_a_corpus(name):
  config = runpy.run_path(f'{ROOT}/configs/{name}.py')['get_config']()
  with pytest.raises(config_lib.ConfigError, match=r"data.source='' .*--config.data.source=hf:"):
    config_lib.validate(config)
  config.data.source = 'hf:wikimedia/wikipedia:20231101.en'
  config_lib.validate(config)


@pytest.mark.parametrize('hidden, dtype, warns', [(768, 'bfloat16', True), (32, 'auto', False)])
def test_platform_is_logged_and_cpu_warned(caplog, hidden, dtype, warns):
  config = config_lib.base_config()
  config.model.hidden_size = hidden
  config.model.dtype = dtype
  with caplog.at_level(logging.INFO):
    sharding.log_platform(config, step_lib.compute_dtype(config.model.dtype))
  assert 'Platform cpu: 1 devices' in caplog.text
  # What the run computes in: 'auto' is float32 on the CPU.
  assert f"compute dtype {'float32' if dtype == 'auto' else dtype}." in caplog.text
  assert ('on the CPU' in caplog.text) == warns
