"""The profile's op names: JAX name stacks shortened by hand-written rules,
and a traced function whose time is mostly one matmul names that matmul."""

import jax
import jax.numpy as jnp

from sctd_jax import hlo_profile


def test_short_op_name_marks_forward_backward_and_layer():
  fwd = ('jit(train_step)/while/body/closed_call/jvp(BertForMaskedLM.forward)'
         '/bert/encoder/layer/3/intermediate/dense/dot_general')
  bwd = ('jit(train_step)/while/body/closed_call/transpose(jvp(BertForMaskedLM.forward))'
         '/bert/encoder/layer/11/attention/self/Dropout_0/jit(_bernoulli)/jit(_uniform)/add')
  assert (hlo_profile.short_op_name(fwd)
          == 'fwd bert/encoder/layer/N/intermediate/dense/dot_general')
  assert (hlo_profile.short_op_name(bwd)
          == 'bwd bert/encoder/layer/N/attention/self/Dropout_0/jit(_bernoulli)')
  assert hlo_profile.short_op_name('jit(train_step)/add') == 'add'


def test_a_traced_matmul_is_named_by_its_op(tmp_path):
  def f(a, b):
    with jax.named_scope('big'):
      c = a @ b
    return c + 1.0

  a = jnp.ones((512, 512), jnp.float32)
  compiled = jax.jit(f).lower(a, a).compile()
  names = hlo_profile.op_names(compiled.as_text())
  assert 'big/dot_general' in names.values()
  trace = hlo_profile.trace_steps(lambda: compiled(a, a), 3, str(tmp_path))
  totals = hlo_profile.op_times(trace, names)
  # 2 * 512^3 multiply-adds against 512^2 additions.
  assert totals.most_common(1)[0][0] == 'big/dot_general'
  assert 'big/dot_general' in hlo_profile.format_top(totals, 1.0)
