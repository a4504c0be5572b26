"""What the CPU race changed, checked for numbers, not speed: the dropout
masks' PRNG (`train.dropout_prng`), the erf form of the exact GELU, and the
matmul shapes `bench --matmuls` compares with PyTorch."""

import dataclasses
import math
import os
import subprocess
import sys

import flax.linen as nn
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
from conftest import CLS, DROPOUT, MASK, PAD, SEP, VOCAB, make_model, random_batch, tiny_config


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


def test_dropout_masks_come_from_the_chosen_prng_with_the_streams_key():
  """models.Dropout is nn.Dropout bit for bit with threefry2x32; with
  philox4x32 its mask is philox's, drawn from the key nn.Dropout would have
  used (the stream's key, same 64 bits)."""
  x = jnp.ones((64, 64))
  rngs = {'dropout': jax.random.PRNGKey(7)}
  ours = lambda prng: models.Dropout(0.5, prng=prng).apply({}, x, False, rngs=rngs)
  flax_dropout = nn.Dropout(0.5)
  np.testing.assert_array_equal(ours('threefry2x32'), flax_dropout.apply({}, x, False, rngs=rngs))
  stream_key = StreamKey().apply({}, rngs=rngs)
  philox = jax.random.wrap_key_data(jax.random.key_data(stream_key), impl='philox4x32')
  want = flax_dropout.apply({}, x, False, rng=philox)
  np.testing.assert_array_equal(ours('philox4x32'), want)
  assert not np.array_equal(want, ours('threefry2x32'))
  assert step_lib.dropout_prng('auto') == 'philox4x32'   # The tests run on CPU.
  assert step_lib.dropout_prng('threefry2x32') == 'threefry2x32'


def test_fine_tuning_draws_threefry_masks_whatever_pretraining_drew():
  """A workdir pretrained with philox4x32 masks is fine-tuned with
  threefry2x32 ones, as fine-tuning always was: the same classifier outputs
  under dropout as from a threefry2x32 encoder config."""
  from sctd_jax.evals import finetune  # pylint: disable=g-import-not-at-top
  cfg = step_lib.model_config(tiny_config(**{'train.dropout_prng': 'philox4x32'}), VOCAB)
  assert cfg.dropout_prng == 'philox4x32'
  ids = jnp.asarray(np.random.default_rng(0).integers(5, VOCAB, (2, 16)), jnp.int32)
  inputs = (ids, jnp.zeros_like(ids), jnp.ones_like(ids))
  def logits(encoder_cfg):
    model = models.BertForSequenceClassification(finetune.encoder_config(encoder_cfg, 0.3), 2)
    params = model.init(jax.random.PRNGKey(0), *inputs)
    return model.apply(params, *inputs, deterministic=False,
                       rngs={'dropout': jax.random.PRNGKey(1)})
  threefry = dataclasses.replace(cfg, dropout_prng='threefry2x32')
  np.testing.assert_array_equal(logits(cfg), logits(threefry))
  philox = models.BertForSequenceClassification(dataclasses.replace(cfg, dropout_rate=0.3), 2)
  params = philox.init(jax.random.PRNGKey(0), *inputs)
  assert not np.array_equal(philox.apply(params, *inputs, deterministic=False,
                                         rngs={'dropout': jax.random.PRNGKey(1)}),
                            logits(threefry))


class StreamKey(nn.Module):
  """The first key a module at the top of the tree draws from 'dropout'."""

  def __call__(self):
    return self.make_rng('dropout')


_SAME_BITS = '''
import jax, numpy as np
from sctd_jax import step
key = jax.random.wrap_key_data(jax.random.PRNGKey(3), impl='philox4x32')
draw = lambda: np.asarray(jax.jit(lambda k: jax.random.bits(k, (4096,)))(key))
x = np.array([0, 1, 2**31, 2**32 - 1, 0x9E3779B9, 0xD2511F53], np.uint32)
mulhi = lambda: np.asarray(jax.jit(jax.lax.mulhi)(x, x[::-1].copy()))
before, before_hi = draw(), mulhi()
step.dropout_prng('philox4x32')   # Registers the widened lowering.
after, after_hi = draw(), mulhi()
want = ((x.astype(object) * x[::-1].astype(object)) >> 32).astype(np.uint32)
print(np.array_equal(before, after), np.array_equal(before_hi, after_hi),
      np.array_equal(after_hi, want))
'''


def test_the_widened_mulhi_lowering_draws_the_same_bits():
  """philox's bits and `lax.mulhi` (against exact integer arithmetic) are
  the same under JAX's own lowering and the one `dropout_prng` registers; a
  fresh process, since the registration is process-wide."""
  out = subprocess.run([sys.executable, '-c', _SAME_BITS], capture_output=True,
                       text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['True', 'True', 'True']


def test_dropout_prng_is_deterministic_and_draws_other_masks():
  """One seed is one run with either PRNG, and they draw different dropout
  masks: the same step's loss differs."""
  losses = {}
  for prng in config_lib.DROPOUT_PRNGS:
    c = tiny_config(**{'method': 'baseline', 'train.dropout_prng': prng,
                       'model.num_layers': 3}, **DROPOUT)
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
  pytest.importorskip('torch')
  c = tiny_config()
  shapes = {name: (a, b) for name, a, b in matmuls.shapes(c)}
  batch_heads, s, head = 4 * 4, 16, 32 // 4   # tiny: batch 4, 4 heads, seq 16, hidden 32
  assert shapes['attention q k^T (batched)'] == ((batch_heads, s, head), (batch_heads, head, s))
  assert shapes['attention probs v (batched)'] == ((batch_heads, s, s), (batch_heads, s, head))
  flops = {name: 2 * np.prod(a) * b[-1] for name, (a, b) in shapes.items()}
  forward = (4 * flops['query/key/value/output x W'] + flops['intermediate x W']
             + flops['output x W'] + flops['attention q k^T (batched)']
             + flops['attention probs v (batched)'])
  m, s = c.model, c.data.seq_len
  assert forward == c.train.batch_size * cost_model.layer_flops(
      m.hidden_size, m.intermediate_size, s, s)
  rows = matmuls.compare(c, reps=2)
  assert [r['product'] for r in rows] == list(flops)
  assert all(np.isfinite([r['jax_gflops'], r['torch_gflops']]).all() for r in rows)
