"""The one compiled train_step: branch choice, compile count, state updates."""

import jax
import numpy as np
import pytest

from sctd_jax import models
from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, DROPOUT, MASK, PAD, SEP, count_compiles, make_model, random_batch, tiny_config


def _state(config, seed=0):
  model = make_model(config)
  importance = token_drop.init_importance(config.model.vocab_size, [CLS, SEP, MASK], [PAD])
  return model, step_lib.create_train_state(config, model, importance, jax.random.PRNGKey(seed))


def test_sctd_step_compiles_once_and_runs_kl_exactly_every_fi_steps():
  fi = 3
  config = tiny_config(**{'sctd.fi': fi}, **DROPOUT)   # masks in both branches
  model, state = _state(config)
  train_step = step_lib.make_train_step(model, config)
  with count_compiles('train_step') as compiles:
    rows = []
    for t in range(2 * fi + 1):
      state, metrics = train_step(state, random_batch(config, seed=t))
      rows.append(jax.device_get(metrics))
  assert len(compiles) == 1, compiles
  for t, m in enumerate(rows):
    sctd = t % fi == 0
    assert bool(m['sctd_step']) == sctd
    for key in ('kl_global', 'kl_local', 'mlm_full'):
      assert np.isfinite(m[key]) == sctd, (t, key, m[key])
    assert np.isfinite(m['mlm_drop']) and np.isfinite(m['loss'])
    if not sctd:
      assert m['loss'] == m['mlm_drop']   # L = L*_MLM off the SCTD steps
  assert int(state.step) == 2 * fi + 1


@pytest.mark.parametrize('method', ['baseline', 'token_drop'])
def test_fixed_branch_methods(method):
  config = tiny_config(method=method)
  model, state = _state(config)
  before = np.asarray(state.importance)
  train_step = step_lib.make_train_step(model, config)
  for t in range(2):
    batch = random_batch(config, seed=t)
    # The allow/deny ids as weighted targets, so "their score is unchanged"
    # is something the update could break.
    batch['mlm_ids'][:2, 0] = CLS, PAD
    state, metrics = train_step(state, batch)
  metrics = jax.device_get(metrics)
  assert not metrics['sctd_step'] and np.isnan(metrics['kl_global'])
  after = np.asarray(state.importance)
  if method == 'baseline':
    assert np.isnan(metrics['mlm_drop']) and metrics['loss'] == metrics['mlm_full']
    np.testing.assert_array_equal(after, before)
  else:
    assert np.isnan(metrics['mlm_full']) and metrics['loss'] == metrics['mlm_drop']
    assert (after != before).sum() > 0
    assert after[CLS] == before[CLS] and after[PAD] == before[PAD]


def test_weight_decay_skips_biases_and_layernorm():
  config = tiny_config()
  _, state = _state(config)
  mask = step_lib.decay_mask(state.params)
  # Stacked runs of layers (model.scan_layers) and the cross layer alike.
  for layer in mask['bert']['encoder']['layer'].values():
    assert layer['attention']['self']['query']['kernel'] is True
    assert layer['attention']['self']['query']['bias'] is False
    assert layer['output']['LayerNorm']['scale'] is False
  assert mask['bert']['embeddings']['word_embeddings']['embedding'] is True
  assert mask['cls']['predictions']['bias'] is False


def test_learning_rate_schedule_warmup_then_linear_decay():
  config = tiny_config(**{'train.learning_rate': 1.0, 'train.warmup_steps': 10,
                          'train.num_steps': 110})
  schedule = step_lib.pretraining_schedule(config.train)
  for t, want in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.5), (110, 0.0)]:
    np.testing.assert_allclose(schedule(t), want, atol=1e-6)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float16'])
def test_training_lowers_the_mlm_loss_on_a_fixed_batch(dtype):
  """In each compute dtype; the parameters (and Adam's moments) stay float32."""
  config = tiny_config(**{'train.learning_rate': 3e-3, 'model.dtype': dtype})
  model, state = _state(config)
  train_step = step_lib.make_train_step(model, config)
  batch = random_batch(config, seed=7)
  losses = []
  for _ in range(30):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['mlm_drop']))
  assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype('float32')}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state) if x.ndim} == {np.dtype('float32')}


@pytest.mark.parametrize('method, objective', [
    ('sctd', 'paper'), ('baseline', 'paper'), ('sctd', 'released')])
def test_grad_accumulation_equals_one_big_batch(method, objective):
  """4 micro-batches of 2 = one batch of 8, on an SCTD step and a dropping
  step (the branch is chosen per optimizer step, not per micro-batch); the
  released objective divides every micro-batch by the whole batch's tokens."""
  common = {'method': method, 'sctd.fi': 2, 'train.batch_size': 8,
            'sctd.objective': objective}
  results = []
  for accum in (1, 4):
    config = tiny_config(**common, **{'train.grad_accum_steps': accum})
    model, state = _state(config)
    train_step = step_lib.make_train_step(model, config)
    batch = random_batch(config, seed=11, pad_from=[16, 9, 16, 12, 16, 16, 7, 16])
    batch['mlm_weights'][0, 2:] = 0   # uneven targets per micro-batch
    rows = []
    for _ in range(2):
      state, metrics = train_step(state, batch)
      rows.append(jax.device_get(metrics))
    results.append((rows, state))
  (rows1, state1), (rows4, state4) = results
  for m1, m4 in zip(rows1, rows4):
    assert m1['sctd_step'] == m4['sctd_step']
    for key in ('loss', 'mlm_drop', 'mlm_full', 'kl_global', 'kl_local', 'grad_norm'):
      np.testing.assert_allclose(m4[key], m1[key], rtol=2e-5, atol=1e-6, err_msg=key)
  assert rows1[0]['sctd_step'] == (method == 'sctd')
  for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state4.params)):
    np.testing.assert_allclose(b, a, atol=2e-6)
  np.testing.assert_allclose(state4.importance, state1.importance, rtol=1e-6)


def test_remat_keeps_parameter_paths_and_values():
  config = tiny_config()
  remat_config = tiny_config(**{'model.remat': True})
  params = models.init_params(make_model(config), jax.random.PRNGKey(0))
  remat_model = make_model(remat_config)
  remat_params = models.init_params(remat_model, jax.random.PRNGKey(0))
  assert jax.tree.structure(params) == jax.tree.structure(remat_params)
  batch = random_batch(config)
  def loss(model, p):
    return model.apply({'params': p}, batch['input_ids'], batch['token_type_ids'],
                       batch['attention_mask']).sum()
  g, g_remat = jax.grad(lambda p: loss(make_model(config), p))(params), \
      jax.grad(lambda p: loss(remat_model, p))(params)
  # Recomputation may round differently: gradients here reach 100, and
  # float32 leaves a few 1e-6 on the smaller ones.
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_released_objective_divides_summed_losses_by_non_pad_tokens():
  """Off the SCTD step the released criterion is sum L* / ntokens; on it the
  KL terms join with lam and no L_MLM term (the hand computation of the
  criterion itself is in test_losses)."""
  config = tiny_config(**{'sctd.fi': 2, 'sctd.objective': 'released'})
  model, state = _state(config)
  train_step = step_lib.make_train_step(model, config)
  lengths = [16, 10, 13, 16]
  ntokens, ntargets = sum(lengths), 4 * config.data.max_predictions
  for t in range(2):
    state, m = jax.device_get(train_step(state, random_batch(config, t, lengths)))
    want = m['mlm_drop'] * ntargets / ntokens
    if t == 0:
      want += 0.05 * (m['kl_global'] + m['kl_local'])
    np.testing.assert_allclose(m['loss'], want, rtol=1e-5)
