"""Mixed precision and the shared SCTD prefix, through the real train_step."""

import jax
import jax.numpy as jnp
import numpy as np

from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, make_model, random_batch, tiny_config


def _state(config):
  model = make_model(config)
  importance = token_drop.init_importance(config.model.vocab_size,
                                          [CLS, SEP, MASK], [PAD])
  return model, step_lib.create_train_state(config, model, importance,
                                            jax.random.PRNGKey(0))


def test_auto_dtype_is_float32_on_cpu():
  assert jax.default_backend() == 'cpu'
  assert step_lib.compute_dtype('auto') == jnp.float32
  assert make_model(tiny_config()).cfg.dtype == jnp.float32


def test_bfloat16_trains_on_cpu_with_one_compile():
  config = tiny_config(**{'model.dtype': 'bfloat16', 'train.learning_rate': 3e-3})
  model, state = _state(config)
  train_step = step_lib.make_train_step(model, config)
  batch = random_batch(config, seed=7)
  losses = []
  for _ in range(20):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  assert train_step._cache_size() == 1
  assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0], losses
  # Parameters stay float32; the compute (and so the logits' rounding) is bf16.
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_shared_prefix_step_equals_the_unshared_step_without_dropout():
  """Step 0 is an SCTD step: same loss terms, gradients and new params."""
  results = []
  for share in (False, True):
    config = tiny_config(**{'sctd.share_prefix': share, 'sctd.fi': 2,
                            'token_drop.first_layer': 2})
    model, state = _state(config)
    state, metrics = step_lib.make_train_step(model, config)(
        state, random_batch(config, seed=3, pad_from=[16, 12, 9, 16]))
    results.append((jax.device_get(metrics), state.params))
  (unshared, p_unshared), (shared, p_shared) = results
  assert unshared['sctd_step'] and shared['sctd_step']
  for key in ('loss', 'mlm_drop', 'mlm_full', 'kl_global', 'kl_local', 'grad_norm'):
    np.testing.assert_allclose(shared[key], unshared[key], rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(p_unshared), jax.tree.leaves(p_shared)):
    np.testing.assert_allclose(b, a, atol=1e-6)
