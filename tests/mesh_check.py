"""Runs five SCTD steps on one device and under several meshes; prints JSON:
per step the loss, the gradient norm, the importance table and a
fingerprint of the parameter update, and at the end how things are sharded.
Dropout is on (0.1), so every mesh must also draw one device's masks.

Run by tests/test_sharding.py in a subprocess with 8 fake CPU devices
(XLA_FLAGS must be set before JAX starts)."""

import json
import sys

import jax
import ml_collections
import numpy as np
import optax

from sctd_jax import sharding
from sctd_jax import step
from sctd_jax import token_drop
from conftest import CLS, DROPOUT, MASK, PAD, SEP, count_compiles, make_model, random_batch, tiny_config

# A small learning rate: Adam's first steps move every weight by about +-lr
# whatever the gradient's size, so a last-bit difference in a near-zero
# gradient (reductions summed in another order on another mesh) would move
# a weight by 2*lr and the comparison would test Adam's sign, not sharding.
# Gradient clipping on (norms here are above 1): it adds a state to the
# optimizer tree, which the sharding must follow, and its global norm must be
# taken over the whole gradient, not one shard's.
# Five layers, so that the kept-only layers 2-3 are a scanned run
# (model.scan_layers) with a stacked [2, ...] kernel.
CONFIG = tiny_config(**{'model.vocab_size': 96, 'train.batch_size': 8, 'sctd.fi': 2,
                        'train.learning_rate': 1e-5, 'train.grad_clip_norm': 1.0,
                        'model.num_layers': 5, 'token_drop.last_layer': 3}, **DROPOUT)
PROBES = {  # parameter -> path in the params tree
    'word_embeddings': ('bert', 'embeddings', 'word_embeddings', 'embedding'),
    'query': ('bert', 'encoder', 'layer', '1', 'attention', 'self', 'query', 'kernel'),
    'ffn_in': ('bert', 'encoder', 'layer', '2-3', 'intermediate', 'dense', 'kernel'),
}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _fingerprint(params, params0):
  """A fixed random projection of the update params - params0, in float64:
  a gradient summed over one shard's rows instead of all moves many weights
  the other way, a last-bit difference moves a few."""
  leaves = jax.tree.leaves(jax.device_get(params))
  leaves0 = jax.tree.leaves(params0)
  rng = np.random.default_rng(0)
  return float(sum(np.sum((np.float64(a) - b) * rng.standard_normal(a.shape))
                   for a, b in zip(leaves, leaves0)))


def run(mesh_shape):
  model = make_model(CONFIG)
  importance = token_drop.init_importance(96, [CLS, SEP, MASK], [PAD])
  create = lambda rng: step.create_train_state(CONFIG, model, importance, rng)
  rng = jax.random.PRNGKey(0)
  if mesh_shape is None:
    state = jax.device_put(create(rng), jax.devices()[0])
    train_step = step.make_train_step(model, CONFIG)
    put = lambda b: jax.device_put(b, jax.devices()[0])
  else:
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(
        zip(sharding.MESH_AXES, mesh_shape))))
    state, state_sharding = step.create_sharded_train_state(
        CONFIG, model, importance, rng, mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    train_step = step.make_train_step(model, CONFIG,
                                      (state_sharding, batch_sharding, replicated))
    put = lambda b: sharding.global_batch(b, batch_sharding, 8)
  params0 = jax.tree.map(np.float64, jax.device_get(state.params))
  steps = []
  with count_compiles('train_step') as compiles:
    for t in range(5):
      state, metrics = train_step(state, put(random_batch(CONFIG, seed=t)))
      steps.append(dict(loss=float(metrics['loss']), grad_norm=float(metrics['grad_norm']),
                        importance=np.asarray(state.importance).tolist(),
                        update=_fingerprint(state.params, params0)))
  shard = lambda x: list(x.addressable_shards[0].data.shape)
  return dict(
      steps=steps, compiles=len(compiles),
      dropout_prng=step.dropout_prng(CONFIG.train.dropout_prng),
      params={k: shard(_get(state.params, p)) for k, p in PROBES.items()},
      adam_mu={k: shard(_get(optax.tree.get(state.opt_state, 'mu'), p))
               for k, p in PROBES.items()},
      importance=shard(state.importance), batch=shard(put(random_batch(CONFIG))['input_ids']))


if __name__ == '__main__':
  meshes = [None] + [tuple(map(int, m.split(','))) for m in sys.argv[1:]]
  print(json.dumps({str(m): run(m) for m in meshes}))
