"""Token dropping: selection, gather/scatter, the cross layer, the EMA table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import models
from sctd_jax import scan_layers
from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, make_model, random_batch, tiny_config


def _importance(vocab):
  return token_drop.init_importance(vocab, [CLS, SEP, MASK], [PAD], 10.0)


def test_keep_rate_one_equals_full_forward_on_padded_batch():
  config = tiny_config(**{'token_drop.keep_rate': 1.0})
  model = make_model(config)
  batch = random_batch(config, pad_from=[16, 11, 7, 13])
  params = models.init_params(model, jax.random.PRNGKey(1))
  k = token_drop.keep_count(16, 1.0)
  keep = token_drop.select_kept(_importance(config.model.vocab_size),
                                batch['input_ids'], k, jax.random.PRNGKey(2))
  def run(indices):
    return model.apply({'params': params}, batch['input_ids'], batch['token_type_ids'],
                       batch['attention_mask'], batch['mlm_positions'], indices,
                       method=model.forward)
  full, dropped = run(None), run(keep)
  np.testing.assert_allclose(dropped.logits, full.logits, atol=1e-5)
  np.testing.assert_allclose(dropped.cls_states, full.cls_states, atol=1e-5)


def test_keep_rate_half_changes_the_output():
  # The converse: with half the tokens dropped the output must differ.
  config = tiny_config()
  model = make_model(config)
  batch = random_batch(config)
  params = models.init_params(model, jax.random.PRNGKey(1))
  keep = token_drop.select_kept(_importance(config.model.vocab_size),
                                batch['input_ids'], 8, jax.random.PRNGKey(2))
  run = lambda idx: model.apply({'params': params}, batch['input_ids'],
                                keep_indices=idx, method=model.forward).logits
  assert np.abs(np.asarray(run(keep) - run(None))).max() > 1e-3


def test_selection_honours_allow_and_deny_lists_and_keeps_order():
  vocab, S, k = 50, 20, 10
  importance = np.asarray(_importance(vocab)).copy()
  importance[10:20] = 3.0   # hard ids: kept before easy ones
  importance[20:50] = 1.0   # easy ids
  importance = jnp.asarray(importance)
  ids = np.array([
      [CLS, 25, 12, MASK, 30, 40, 11, 26, MASK, 13, SEP, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
      [CLS, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, MASK, SEP],
  ], np.int32)
  for seed in range(5):
    kept = np.asarray(token_drop.select_kept(importance, ids, k, jax.random.PRNGKey(seed)))
    assert (np.diff(kept, axis=1) > 0).all(), 'kept indices must ascend'
    for row, idx in zip(ids, kept):
      kept_ids = row[idx]
      must_keep = np.flatnonzero(np.isin(row, [CLS, SEP, MASK]))
      assert set(must_keep) <= set(idx)
      assert idx[0] == 0 and kept_ids[0] == CLS
    # Row 0: 11 non-pad tokens for 10 slots: no [PAD] kept, and the one
    # dropped token is an easy id (importance 1.0).
    assert PAD not in ids[0][kept[0]]
    dropped = sorted(set(range(S)) - set(kept[0]))
    assert all(ids[0][j] == PAD or ids[0][j] >= 20 for j in dropped)
    # Row 1: only easy ids besides the specials: order-preserving random pick.
    assert {0, 18, 19} <= set(kept[1])


def test_tie_breaker_varies_the_kept_set():
  ids = np.full((1, 32), 30, np.int32)
  ids[0, 0] = CLS
  importance = _importance(50)
  picks = {tuple(np.asarray(token_drop.select_kept(importance, ids, 8, jax.random.PRNGKey(s)))[0])
           for s in range(6)}
  assert len(picks) > 1, 'equal scores must not always keep the first positions'


def test_gather_scatter_round_trip():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 10, 4)), jnp.float32)
  idx = jnp.asarray(np.sort(np.stack([rng.choice(10, 5, replace=False) for _ in range(3)]), 1))
  kept = token_drop.gather(x, idx)
  np.testing.assert_array_equal(kept, np.stack([np.asarray(x)[b, np.asarray(idx)[b]] for b in range(3)]))
  np.testing.assert_array_equal(token_drop.scatter(x, idx, kept), x)
  changed = token_drop.scatter(jnp.zeros_like(x), idx, kept + 1.0)
  for b in range(3):
    others = np.setdiff1d(np.arange(10), np.asarray(idx)[b])
    np.testing.assert_array_equal(np.asarray(changed)[b, others], 0.0)
    np.testing.assert_array_equal(np.asarray(changed)[b, np.asarray(idx)[b]],
                                  np.asarray(kept)[b] + 1.0)
  mask = jnp.asarray(rng.integers(0, 2, (3, 10)))
  np.testing.assert_array_equal(token_drop.gather(mask, idx),
                                np.take_along_axis(np.asarray(mask), np.asarray(idx), 1))


def _layer_norm(x, p, eps=1e-12):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _reference_layer(p, x_q, x_kv, kv_mask, heads):
  """BERT layer in NumPy: queries from x_q, keys/values from x_kv."""
  from scipy.special import erf
  dense = lambda x, q: x @ np.asarray(q['kernel']) + np.asarray(q['bias'])
  sa = p['attention']['self']
  B, Sq, d = x_q.shape
  hd = d // heads
  split = lambda t: t.reshape(B, -1, heads, hd).transpose(0, 2, 1, 3)
  q, k, v = split(dense(x_q, sa['query'])), split(dense(x_kv, sa['key'])), split(dense(x_kv, sa['value']))
  scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
  scores = np.where(kv_mask[:, None, None, :] > 0, scores, -1e30)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  a = (probs @ v).transpose(0, 2, 1, 3).reshape(B, Sq, d)
  out = p['attention']['output']
  x = _layer_norm(dense(a, out['dense']) + x_q, out['LayerNorm'])
  h = dense(x, p['intermediate']['dense'])
  h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
  return _layer_norm(dense(h, p['output']['dense']) + x, p['output']['LayerNorm'])


def test_cross_attention_layer_matches_reference():
  config = tiny_config()
  cfg = step_lib.model_config(config, config.model.vocab_size)
  layer = models.Layer(cfg)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 9, 32)).astype(np.float32)
  mask = np.array([[1] * 9, [1] * 6 + [0] * 3], np.int32)
  idx = np.array([[0, 2, 3, 7], [0, 1, 4, 5]], np.int32)
  x_q = np.take_along_axis(x, idx[..., None], 1)
  params = layer.init(jax.random.PRNGKey(0), x_q, x, mask.astype(bool), True)['params']
  params = jax.tree.map(np.asarray, models.nn.meta.unbox(params))
  got = layer.apply({'params': params}, x_q, x, mask.astype(bool), True)
  want = _reference_layer(params, x_q, x, mask, heads=4)
  assert got.shape == (2, 4, 32)
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize('first, last, overrides', [
    (2, 4, {}),   # the default schedule: full 0-1, cross 2, kept 3-4, full 5
    (1, 3, {'token_drop.first_layer': 1, 'token_drop.last_layer': 3}),
])
def test_dropped_forward_schedule_matches_composed_layers(first, last, overrides):
  """The dropping forward is: full layers, cross, kept-only, scatter, full;
  every layer's states at every position, as sown for probing."""
  config = tiny_config(**{'model.num_layers': 6}, **overrides)
  model = make_model(config)
  batch = random_batch(config, pad_from=[16, 12, 16, 9])
  params = models.init_params(model, jax.random.PRNGKey(1))
  idx = np.asarray(token_drop.select_kept(_importance(config.model.vocab_size),
                                          batch['input_ids'], 8, jax.random.PRNGKey(0)))
  got, sown = model.apply({'params': params}, batch['input_ids'], batch['token_type_ids'],
                          batch['attention_mask'], None, idx, method=model.forward,
                          mutable='intermediates')
  got_states = sown['intermediates']['bert']['encoder']['layer']['hidden_states']
  cfg = step_lib.model_config(config, config.model.vocab_size)
  p = jax.tree.map(np.asarray, scan_layers.unstack_layers(params))  # Scanned runs too.
  emb = models.Embeddings(cfg).apply({'params': p['bert']['embeddings']},
                                     batch['input_ids'], batch['token_type_ids'], True)
  layer = lambda i, xq, xkv, m: _reference_layer(
      p['bert']['encoder']['layer'][str(i)], xq, xkv, m, heads=4)
  mask = batch['attention_mask']
  kept_mask = np.take_along_axis(mask, idx, 1)
  x = np.asarray(emb)
  want = []
  for i in range(6):
    if i < first or i > last:
      x = layer(i, x, x, mask)
    elif i == first:
      full_x = x
      x = layer(i, np.take_along_axis(x, idx[..., None], 1), full_x, mask)
    else:
      x = layer(i, x, x, kept_mask)
    if i == last:
      merged = full_x.copy()
      np.put_along_axis(merged, idx[..., None], x, 1)
      x = merged
    want.append(x)
  for i in range(6):
    np.testing.assert_allclose(got_states[i], want[i], atol=2e-5, err_msg=f'layer {i}')
    np.testing.assert_allclose(got.cls_states[i], want[i][:, 0], atol=2e-5, err_msg=f'layer {i}')


def test_importance_ema_matches_hand_computation():
  vocab, beta = 10, 0.9
  table = token_drop.init_importance(vocab, [CLS, SEP, MASK], [PAD], 10.0)
  ids = np.array([[7, 7, 5], [7, 8, CLS], [9, 6, PAD]], np.int32)
  losses = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], np.float32)
  weights = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1]], np.float32)
  new = np.asarray(token_drop.update_importance(table, ids, losses, weights, beta))
  want = np.asarray(table).copy()
  want[7] = beta * 10 + (1 - beta) * (1 + 2 + 4) / 3   # three occurrences
  want[5] = beta * 10 + (1 - beta) * 3
  want[8] = beta * 10 + (1 - beta) * 5
  want[6] = beta * 10 + (1 - beta) * 8
  # id 9 only in a weight-0 slot; [CLS] (allow list) and [PAD] (deny list)
  # are weighted targets here, yet keep their scores.
  np.testing.assert_allclose(new, want, rtol=1e-6)
  assert new[CLS] == token_drop.ALLOW_SCORE and new[PAD] == token_drop.DENY_SCORE


def test_importance_update_is_order_independent():
  rng = np.random.default_rng(0)
  table = token_drop.init_importance(30, [CLS], [PAD], 10.0)
  ids = rng.integers(5, 30, (64,)).astype(np.int32)
  losses = rng.random(64).astype(np.float32)
  weights = np.ones(64, np.float32)
  perm = rng.permutation(64)
  a = token_drop.update_importance(table, ids, losses, weights, 0.95)
  b = token_drop.update_importance(table, ids[perm], losses[perm], weights, 0.95)
  np.testing.assert_allclose(a, b, rtol=1e-6)
