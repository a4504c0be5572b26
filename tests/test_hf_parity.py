"""Our BERT against Hugging Face's PyTorch BertForMaskedLM with the same weights."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from sctd_jax.hf import format as hf_format
from sctd_jax import models
from sctd_jax import step as step_lib
from conftest import HERE, default_level_env, random_batch, tiny_config

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


@pytest.mark.parametrize('act', ['gelu', 'gelu_new', 'relu'])
def test_mlm_logits_match_hf_pytorch_with_padding_and_two_segments(act):
  config = tiny_config(**{'model.hidden_act': act})
  cfg = step_lib.model_config(config, config.model.vocab_size)
  model = models.BertForMaskedLM(cfg)
  params = models.init_params(model, jax.random.PRNGKey(0))
  # Non-zero biases and LayerNorm params, so a wrong mapping cannot hide.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  batch = random_batch(config, seed=3, pad_from=[16, 10, 13, 7])
  segments = (np.arange(16)[None] >= np.array([[8], [5], [6], [3]])).astype(np.int32)
  segments *= batch['attention_mask']
  ours = np.asarray(model.apply({'params': params}, batch['input_ids'], segments,
                                batch['attention_mask']))

  hf = transformers.BertForMaskedLM(hf_format.to_hf_config(cfg)).eval()
  state = {k: torch.tensor(v) for k, v in hf_format.to_hf_state_dict(params).items()}
  missing, unexpected = hf.load_state_dict(state, strict=False)
  # BertForMaskedLM has no pooler; BertModel and the classifiers use it.
  assert not missing and set(unexpected) == {'bert.pooler.dense.weight',
                                             'bert.pooler.dense.bias'}
  with torch.no_grad():
    theirs = hf(input_ids=torch.from_numpy(batch['input_ids']).long(),
                token_type_ids=torch.from_numpy(segments).long(),
                attention_mask=torch.from_numpy(batch['attention_mask']).long()).logits.numpy()
  real = batch['attention_mask'].astype(bool)
  assert ours.shape == theirs.shape == (4, 16, config.model.vocab_size)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4)


def test_parity_at_the_default_xla_optimisation_level():
  """conftest.py sets XLA's lowest optimisation level for speed; users run
  the default one, whose fusions reorder float operations."""
  if os.environ.get('SCTD_TESTS_XLA_DEFAULT_LEVEL'):
    pytest.skip('already at the default level')
  run = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       'test_hf_parity.py::test_mlm_logits_match_hf_pytorch_with_padding_and_two_segments'],
      cwd=HERE, capture_output=True, text=True, timeout=900,
      env=default_level_env())
  assert run.returncode == 0, run.stdout[-3000:]
  assert '3 passed' in run.stdout, run.stdout[-3000:]
