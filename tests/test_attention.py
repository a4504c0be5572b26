"""model.attention: jax.nn.dot_product_attention for the three layer kinds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import models
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, random_batch, tiny_config

HEADS, HEAD_DIM = 4, 8


def reference(q, k, v, kv_mask):
  """Masked softmax attention in float64 NumPy, independent of the model."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  scores = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  scores = np.where(np.asarray(kv_mask)[:, None, None, :], scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', probs, v)


def layer_inputs(kind: str, seed: int = 0):
  """q, k, v and the key mask of a full, cross or kept-only layer on a
  right-padded batch, the kept set chosen as the model chooses it."""
  config = tiny_config(**{'data.seq_len': 16})
  batch = random_batch(config, seed, pad_from=[16, 11, 7, 6])
  importance = token_drop.init_importance(config.model.vocab_size,
                                          [CLS, SEP, MASK], [PAD])
  kept = token_drop.select_kept(importance, batch['input_ids'], 8,
                                jax.random.PRNGKey(seed))
  mask = jnp.asarray(batch['attention_mask'], bool)
  kept_mask = token_drop.gather(mask, kept)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), 2)
  full = jax.random.normal(keys[0], (4, 16, HEADS, HEAD_DIM))
  kv = jax.random.normal(keys[1], (4, 16, HEADS, 2 * HEAD_DIM))
  k_full, v_full = kv[..., :HEAD_DIM], kv[..., HEAD_DIM:]
  gather = lambda x: token_drop.gather(x.reshape(4, 16, -1), kept).reshape(
      4, 8, HEADS, HEAD_DIM)
  if kind == 'full':
    return full, k_full, v_full, mask
  if kind == 'cross':   # Kept queries against all keys, full padding mask.
    return gather(full), k_full, v_full, mask
  return gather(full), gather(k_full), gather(v_full), kept_mask


@pytest.mark.parametrize('kind', ['full', 'cross', 'kept'])
def test_fused_and_einsum_paths_match_reference_on_padded_batch(kind):
  q, k, v, kv_mask = layer_inputs(kind)
  if kind == 'kept':   # The padded rows keep some pad slots, masked.
    assert not bool(jnp.all(kv_mask))
  want = reference(q, k, v, kv_mask)
  fused = models.attend(q, k, v, kv_mask, 'xla')
  einsum = models.attend(q, k, v, kv_mask, 'xla', dropout=lambda p: p)
  np.testing.assert_allclose(np.asarray(fused), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(einsum), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fused), np.asarray(einsum), atol=1e-5)


def test_auto_is_xla_on_cpu_and_under_dropout():
  assert models.attention_implementation('auto', jnp.bfloat16, False) == 'xla'
  assert models.attention_implementation('auto', jnp.float32, True) == 'xla'
  assert models.attention_implementation('cudnn', jnp.bfloat16, False) == 'cudnn'


def test_cudnn_with_attention_dropout_is_a_config_error():
  c = tiny_config(**{'model.attention': 'cudnn', 'model.attention_dropout_rate': 0.1})
  with pytest.raises(config_lib.ConfigError, match='model.attention'):
    config_lib.validate(c)
  c.model.attention_dropout_rate = 0.0
  config_lib.validate(c)
