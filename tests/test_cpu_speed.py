"""What the CPU race changed, checked for numbers, not speed: the dropout
masks' PRNG (`train.dropout_prng`), the erf form of the exact GELU, and the
matmul shapes `bench --matmuls` compares with PyTorch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax import matmuls
from sctd_jax import models
from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, make_model, random_batch, tiny_config


def _losses_after_one_step(config, runs):
  """The loss of the first step from `runs` fresh states, one compiled step."""
  model = make_model(config)
  train_step = step_lib.make_train_step(model, config)   # Donates the state.
  batch = random_batch(config)
  fresh = lambda: step_lib.create_train_state(config, model, token_drop.init_importance(
      config.model.vocab_size, [CLS, SEP, MASK], [PAD]), jax.random.PRNGKey(0))
  return [float(train_step(fresh(), batch)[1]['loss']) for _ in range(runs)]


def test_dropout_prng_is_validated_by_name():
  c = tiny_config(**{'train.dropout_prng': 'mersenne'})
  with pytest.raises(config_lib.ConfigError, match='train.dropout_prng'):
    config_lib.validate(c)


def test_dropout_key_keeps_the_64_bits_and_changes_only_the_implementation():
  raw = jax.random.PRNGKey(7)
  assert step_lib.dropout_key(raw, 'threefry2x32') is raw
  key = step_lib.dropout_key(raw, 'philox4x32')
  assert str(jax.random.key_impl(key)) == 'philox4x32'
  np.testing.assert_array_equal(jax.random.key_data(key), raw)
  assert step_lib.dropout_prng('auto') == 'philox4x32'   # The tests run on CPU.
  assert step_lib.dropout_prng('threefry2x32') == 'threefry2x32'


def test_dropout_prng_is_deterministic_and_draws_other_masks():
  """One seed is one run with either PRNG, and they draw different dropout
  masks: the same step's loss differs."""
  losses = {}
  for prng in config_lib.DROPOUT_PRNGS:
    c = tiny_config(**{'method': 'baseline', 'train.dropout_prng': prng,
                       'model.num_layers': 3})
    first, second = _losses_after_one_step(c, runs=2)
    assert first == second
    losses[prng] = first
  assert losses['philox4x32'] != losses['threefry2x32']
  assert losses['auto'] == losses['philox4x32']


def test_gelu_erf_matches_a_float64_reference():
  x = np.linspace(-12.0, 12.0, 4001)
  want = 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
  got = np.asarray(models.gelu_erf(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Its gradient is GELU's derivative, Phi(x) + x phi(x).
  grad = np.asarray(jax.vmap(jax.grad(models.gelu_erf))(jnp.asarray(x, jnp.float32)))
  phi = np.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)
  cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
  np.testing.assert_allclose(grad, cdf + x * phi, rtol=1e-5, atol=1e-6)


def test_matmul_shapes_are_one_layers_products():
  """`bench --matmuls` times the layer's own products: their forward FLOPs
  (q, k, v and the attention output share one shape) are the cost model's
  FLOPs of one full layer over the batch; each is timed in both frameworks."""
  c = tiny_config()
  flops = {name: 2 * np.prod(a) * b[-1] for name, a, b in matmuls.shapes(c)}
  forward = (4 * flops['query/key/value/output x W'] + flops['intermediate x W']
             + flops['output x W'] + flops['attention q k^T (batched)']
             + flops['attention probs v (batched)'])
  m, s = c.model, c.data.seq_len
  assert forward == c.train.batch_size * cost_model.layer_flops(
      m.hidden_size, m.intermediate_size, s, s)
  rows = matmuls.compare(c, reps=2)
  assert [r['product'] for r in rows] == list(flops)
  assert all(r['jax_gflops'] > 0 and r['torch_gflops'] > 0 for r in rows)
