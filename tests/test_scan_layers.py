"""model.scan_layers: scanned runs of layers compute what the unrolled
layers compute, with the same parameters in another layout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import checkpointing
from sctd_jax.hf import format as hf_format
from sctd_jax import models
from sctd_jax import representations
from sctd_jax import scan_layers
from sctd_jax import sharding
from sctd_jax import step as step_lib
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, count_compiles, make_model, random_batch, tiny_config

# 6 layers, cross layer 2, kept-only 3-4: runs 0-1 | 2 | 3-4 | 5.
SIX = {'model.num_layers': 6, 'token_drop.first_layer': 2, 'token_drop.last_layer': 4}


def _pair(**overrides):
  """(config, model) unrolled and scanned, and the unrolled model's params
  with non-zero biases and LayerNorm params, so no mix-up can hide."""
  out = []
  for scan in (False, True):
    config = tiny_config(**SIX, **{'model.scan_layers': scan}, **overrides)
    out.append((config, make_model(config)))
  params = models.init_params(out[0][1], jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [np.asarray(x + 0.05 * jax.random.normal(k, x.shape))
                                     for x, k in zip(leaves, keys)])
  return out, params


def test_runs_and_stacked_layout():
  (_, flat), (_, scanned) = _pair()[0]
  assert [(r.name, r.start, r.stop, r.stacked) for r in scan_layers.layer_runs(scanned.cfg)] == [
      ('0-1', 0, 2, True), ('2', 2, 3, False), ('3-4', 3, 5, True), ('5', 5, 6, False)]
  assert [r.name for r in scan_layers.layer_runs(flat.cfg)] == list('012345')
  params = models.init_params(flat, jax.random.PRNGKey(0))
  stacked = scan_layers.stack_layers(params, scanned.cfg)
  # The layout the scanned model initialises is the one stack_layers builds.
  init = jax.eval_shape(lambda: models.init_params(scanned, jax.random.PRNGKey(0)))
  assert jax.tree.structure(stacked) == jax.tree.structure(init)
  assert jax.tree.map(np.shape, stacked) == jax.tree.map(lambda x: x.shape, init)
  layer = stacked['bert']['encoder']['layer']
  assert layer['3-4']['output']['dense']['kernel'].shape == (2, 64, 32)
  np.testing.assert_array_equal(layer['3-4']['output']['dense']['kernel'][1],
                                params['bert']['encoder']['layer']['4']['output']['dense']['kernel'])
  back = scan_layers.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def _losses_and_grads(config, model, params, batch, branch):
  keep = None
  if branch != 'full':
    k = token_drop.keep_count(config.data.seq_len, config.token_drop.keep_rate)
    importance = token_drop.init_importance(config.model.vocab_size, [CLS, SEP, MASK], [PAD])
    keep = token_drop.select_kept(importance, batch['input_ids'], k, jax.random.PRNGKey(5))
  counts = (np.sum(batch['mlm_weights']), batch['input_ids'].shape[0],
            np.sum(batch['attention_mask']))
  fn = lambda p: step_lib._losses(model, config, p, batch, keep, jax.random.PRNGKey(2),
                                  branch, *counts)
  (loss, out), grads = jax.value_and_grad(lambda p: (lambda o: (o.loss, o))(fn(p)),
                                          has_aux=True)(params)
  return loss, out.metrics, grads


@pytest.mark.parametrize('branch, share_prefix', [
    ('full', False), ('drop', False), ('sctd', False), ('sctd', True)])
def test_scanned_loss_and_grads_equal_the_unrolled_ones(branch, share_prefix):
  """Baseline, token_drop and SCTD (shared prefix too), padded rows."""
  ((c0, flat), (c1, scanned)), params = _pair(
      **{'method': 'sctd', 'sctd.share_prefix': share_prefix})
  batch = random_batch(c0, seed=3, pad_from=[16, 12, 9, 16])
  loss0, metrics0, grads0 = _losses_and_grads(c0, flat, params, batch, branch)
  loss1, metrics1, grads1 = _losses_and_grads(
      c1, scanned, scan_layers.stack_layers(params, scanned.cfg), batch, branch)
  np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
  for key, value in metrics0.items():
    np.testing.assert_allclose(metrics1[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  grads1 = scan_layers.unstack_layers(grads1)
  assert jax.tree.structure(grads1) == jax.tree.structure(grads0)
  norm = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads0))
  assert norm > 1e-3  # Gradients that could differ.
  for path, g0 in jax.tree_util.tree_leaves_with_path(grads0):
    g1 = dict(jax.tree_util.tree_leaves_with_path(grads1))[path]
    np.testing.assert_allclose(g1, g0, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_scanned_sctd_run_compiles_once_and_matches_the_unrolled_run():
  """Hybrid SCTD (fi 2: both branches of the cond) for 4 steps."""
  pairs, params = _pair(**{'method': 'sctd', 'sctd.fi': 2})
  runs = []
  for config, model in pairs:
    importance = token_drop.init_importance(config.model.vocab_size, [CLS, SEP, MASK], [PAD])
    state = step_lib.create_train_state(config, model, importance, jax.random.PRNGKey(0))
    state = state.replace(params=jax.tree.map(jnp.asarray,
                                              scan_layers.stack_layers(params, model.cfg)))
    state = state.replace(opt_state=state.tx.init(state.params))
    train_step = step_lib.make_train_step(model, config)
    losses = []
    with count_compiles('train_step') as compiles:
      for i in range(4):
        state, metrics = train_step(state, random_batch(config, seed=i))
        losses.append(float(metrics['loss']))
    assert train_step._cache_size() == 1 and len(compiles) <= 1
    runs.append(losses)
  np.testing.assert_allclose(runs[1], runs[0], rtol=1e-4)


def test_layer_vectors_give_one_row_per_layer_scanned_or_not():
  ((c0, flat), (_, scanned)), params = _pair()
  batch = random_batch(c0, seed=4, pad_from=[16, 7, 9, 12])
  args = (batch['input_ids'], batch['token_type_ids'], batch['attention_mask'])
  rows0 = representations.layer_vectors(flat, params, *args)
  rows1 = representations.layer_vectors(scanned, scan_layers.stack_layers(params, scanned.cfg),
                                        *args)
  assert rows0.shape == rows1.shape == (6, 4, 32)
  np.testing.assert_allclose(rows1, rows0, atol=1e-5)
  # Row l is layer l's output: the last row is the encoder's output.
  last = representations.pool(flat.apply({'params': params}, *args, method=flat.encode),
                              batch['attention_mask'], 'mean')
  np.testing.assert_allclose(rows1[-1], last, atol=1e-5)


def test_scanned_params_export_as_hf_pytorch_computes_them():
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  ((c0, _), (_, scanned)), params = _pair()
  stacked = scan_layers.stack_layers(params, scanned.cfg)
  batch = random_batch(c0, seed=3, pad_from=[16, 10, 13, 7])
  ours = np.asarray(scanned.apply({'params': stacked}, batch['input_ids'], None,
                                  batch['attention_mask']))
  hf = transformers.BertForMaskedLM(hf_format.to_hf_config(scanned.cfg)).eval()
  tensors = hf_format.to_hf_state_dict(stacked)
  missing, unexpected = hf.load_state_dict(
      {k: torch.tensor(v) for k, v in tensors.items()}, strict=False)
  assert not missing and set(unexpected) == set(hf_format.POOLER)
  with torch.no_grad():
    theirs = hf(input_ids=torch.from_numpy(batch['input_ids']).long(),
                attention_mask=torch.from_numpy(batch['attention_mask']).long()).logits.numpy()
  real = batch['attention_mask'].astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4)
  # Import into the scanned layout is the inverse of export.
  imported = hf_format.from_hf_state_dict(tensors, scanned.cfg)
  assert imported.fresh == ()
  jax.tree.map(np.testing.assert_array_equal, imported.params, stacked)


def test_stacked_axis_is_named_layers_and_unsharded():
  (_, scanned) = _pair()[0][1]
  ids = jax.ShapeDtypeStruct((1, 8), np.int32)
  boxed = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), ids))['params']
  specs = nn.get_partition_spec(boxed)['bert']['encoder']['layer']
  assert tuple(specs['3-4']['attention']['self']['query']['kernel']) == (
      'layers', 'embed', 'heads')
  assert tuple(specs['2']['attention']['self']['query']['kernel']) == ('embed', 'heads')
  mesh = jax.make_mesh((1, 1, 1), sharding.MESH_AXES)
  shardings = sharding.param_shardings(scanned, mesh)['bert']['encoder']['layer']
  assert tuple(shardings['3-4']['attention']['self']['query']['kernel'].spec) == (
      None, 'fsdp', 'tensor')


def test_checkpoint_of_another_layout_is_refused_with_the_keys_to_set():
  (c0, _), (c1, _) = _pair()[0]
  scanned, unrolled = checkpointing.model_shape(c1), checkpointing.model_shape(c0)
  assert scanned['layer_runs'] == ['0-1', '2', '3-4', '5'] and 'layer_runs' not in unrolled
  for saved, current in ((scanned, unrolled), (unrolled, scanned)):
    with pytest.raises(checkpointing.CheckpointMismatch, match='model.scan_layers'):
      checkpointing._check_shape(saved, current, 'ckpt')
  checkpointing._check_shape(dict(scanned), scanned, 'ckpt')
