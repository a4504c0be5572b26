"""Runs five SCTD steps on one device and under several meshes; prints JSON.

Run by tests/test_sharding.py in a subprocess with 8 fake CPU devices
(XLA_FLAGS must be set before JAX starts)."""

import json
import sys

import jax
import ml_collections

from sctd_jax import sharding
from sctd_jax import step
from sctd_jax import token_drop
from conftest import CLS, MASK, PAD, SEP, make_model, random_batch, tiny_config

# A small learning rate: Adam's first steps move every weight by about +-lr
# whatever the gradient's size, so a last-bit difference in a near-zero
# gradient (reductions summed in another order on another mesh) would move
# a weight by 2*lr and the comparison would test Adam's sign, not sharding.
CONFIG = tiny_config(**{'model.vocab_size': 96, 'train.batch_size': 8, 'sctd.fi': 2,
                        'train.learning_rate': 1e-5})
PROBES = {  # parameter -> path in the params tree
    'word_embeddings': ('bert', 'embeddings', 'word_embeddings', 'embedding'),
    'query': ('bert', 'encoder', 'layer', '1', 'attention', 'self', 'query', 'kernel'),
    'ffn_in': ('bert', 'encoder', 'layer', '2', 'intermediate', 'dense', 'kernel'),
}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


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
  losses = []
  for t in range(5):
    state, metrics = train_step(state, put(random_batch(CONFIG, seed=t)))
    losses.append(float(metrics['loss']))
  shard = lambda x: list(x.addressable_shards[0].data.shape)
  return dict(
      losses=losses, compiles=train_step._cache_size(),
      params={k: shard(_get(state.params, p)) for k, p in PROBES.items()},
      adam_mu={k: shard(_get(state.opt_state[0].mu, p)) for k, p in PROBES.items()},
      importance=shard(state.importance), batch=shard(put(random_batch(CONFIG))['input_ids']))


if __name__ == '__main__':
  meshes = [None] + [tuple(map(int, m.split(','))) for m in sys.argv[1:]]
  print(json.dumps({str(m): run(m) for m in meshes}))
