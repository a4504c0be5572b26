"""MLM loss and Eq. 4, against NumPy written from the paper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax import losses


def _np_kl(t, s):
  p = np.exp(t - t.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
  q = np.exp(s - s.max(-1, keepdims=True)); q /= q.sum(-1, keepdims=True)
  return (p * (np.log(p) - np.log(q))).sum(-1)


def _np_xent(logits, labels):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, labels[..., None], -1)[..., 0]


def _sctd(**overrides):
  c = config_lib.base_config().sctd
  c.update(overrides)
  return c


def _branches(seed=0):
  rng = np.random.default_rng(seed)
  cls_full = rng.normal(size=(4, 3, 8)).astype(np.float32)   # [layers, B, d]
  cls_drop = rng.normal(size=(4, 3, 8)).astype(np.float32)
  return 2.5, 3.1, cls_full, cls_drop


def test_mlm_loss_matches_reference_and_ignores_padding_slots():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
  labels = rng.integers(0, 11, (2, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], np.float32)
  got = losses.mlm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  xent = _np_xent(logits, labels)
  np.testing.assert_allclose(got.per_token, xent, rtol=1e-5)
  np.testing.assert_allclose(got.mean, (xent * weights).sum() / 5, rtol=1e-5)


def test_mlm_loss_with_no_targets_is_finite():
  got = losses.mlm_loss(jnp.ones((2, 3, 7)), jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)))
  assert float(got.mean) == 0.0


def test_kl_is_zero_for_identical_inputs_and_matches_reference():
  x = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
  np.testing.assert_allclose(losses.cls_kl(x, x), 0.0, atol=1e-6)
  y = np.random.default_rng(2).normal(size=(5, 16)).astype(np.float32)
  np.testing.assert_allclose(losses.cls_kl(x, y), _np_kl(x, y), rtol=1e-5)
  assert (np.asarray(losses.cls_kl(x, y)) > 0).all()


def test_sctd_objective_equals_eq4_by_hand():
  mlm_drop, mlm_full, cls_full, cls_drop = _branches()
  lam = 0.05
  got = losses.sctd_objective(mlm_drop, mlm_full, cls_full, cls_drop, 12.0, _sctd(lam=lam))
  kl_g = _np_kl(cls_full[-1], cls_drop[-1]).mean()
  kl_l = _np_kl(cls_full[-2], cls_drop[-2]).mean()
  want = 0.5 * mlm_drop + 0.5 * mlm_full + lam * (kl_g + kl_l)
  np.testing.assert_allclose(got.loss, want, rtol=1e-5)
  np.testing.assert_allclose(got.kl_global, kl_g, rtol=1e-5)
  np.testing.assert_allclose(got.kl_local, kl_l, rtol=1e-5)


@pytest.mark.parametrize('switch, removed', [
    ('use_mlm_full', lambda f, g, l: 0.5 * f),
    ('use_kl_global', lambda f, g, l: 0.05 * g),
    ('use_kl_local', lambda f, g, l: 0.05 * l),
])
def test_each_ablation_switch_removes_exactly_its_term(switch, removed):
  mlm_drop, mlm_full, cls_full, cls_drop = _branches(1)
  full = losses.sctd_objective(mlm_drop, mlm_full, cls_full, cls_drop, 12.0, _sctd())
  ablated = losses.sctd_objective(mlm_drop, mlm_full, cls_full, cls_drop, 12.0,
                                  _sctd(**{switch: False}))
  kl_g = _np_kl(cls_full[-1], cls_drop[-1]).mean()
  kl_l = _np_kl(cls_full[-2], cls_drop[-2]).mean()
  np.testing.assert_allclose(full.loss - ablated.loss, removed(mlm_full, kl_g, kl_l), rtol=1e-5)


def test_masked_tokens_normalizer_sums_kl_over_the_batch():
  mlm_drop, mlm_full, cls_full, cls_drop = _branches(2)
  got = losses.sctd_objective(mlm_drop, mlm_full, cls_full, cls_drop, 12.0,
                              _sctd(kl_normalizer='masked_tokens'))
  np.testing.assert_allclose(got.kl_global, _np_kl(cls_full[-1], cls_drop[-1]).sum() / 12.0,
                             rtol=1e-5)


def test_stop_grad_teacher_blocks_gradient_into_full_branch():
  mlm_drop, mlm_full, cls_full, cls_drop = _branches(3)
  def grad_wrt_teacher(stop):
    f = lambda t: losses.sctd_objective(mlm_drop, mlm_full, t, cls_drop, 12.0,
                                        _sctd(stop_grad_teacher=stop)).loss
    return np.asarray(jax.grad(f)(jnp.asarray(cls_full)))
  assert np.abs(grad_wrt_teacher(False)).max() > 0
  np.testing.assert_array_equal(grad_wrt_teacher(True), 0.0)


def test_released_objective_is_the_authors_criterion_by_hand():
  """1.0 * sum L* + lam (sum KL_g + sum KL_l), over non-pad input tokens;
  the full branch's MLM and the paper-mode switches do not enter."""
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(3, 4, 11)).astype(np.float32)
  labels = rng.integers(0, 11, (3, 4))
  weights = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
  attention_mask = np.array([[1] * 16, [1] * 9 + [0] * 7, [1] * 12 + [0] * 4])
  _, _, cls_full, cls_drop = _branches(4)
  mlm = losses.mlm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  sctd = _sctd(objective='released', lam=0.05, kl_normalizer='batch')
  got = losses.sctd_objective(mlm.mean, 123.0, cls_full, cls_drop, weights.sum(), sctd,
                              num_inputs=attention_mask.sum())
  ntokens = 16 + 9 + 12
  mlm_sum = (_np_xent(logits, labels) * weights).sum()
  kl_sum = (_np_kl(cls_full[-1], cls_drop[-1]).sum() +
            _np_kl(cls_full[-2], cls_drop[-2]).sum())
  np.testing.assert_allclose(got.loss, (mlm_sum + 0.05 * kl_sum) / ntokens, rtol=1e-5)
  np.testing.assert_allclose(got.kl_global,
                             _np_kl(cls_full[-1], cls_drop[-1]).sum() / ntokens, rtol=1e-5)


def test_released_objective_with_no_input_tokens_is_finite():
  _, _, cls_full, cls_drop = _branches(5)
  got = losses.sctd_objective(0.0, 0.0, cls_full, cls_drop, 0.0,
                              _sctd(objective='released'), num_inputs=0.0)
  assert np.isfinite(float(got.loss))


@pytest.mark.parametrize('objective, normalizer, seq_len, want', [
    ('paper', 'batch', 512, 0.05),
    ('paper', 'masked_tokens', 512, 0.05 / 76),   # round(0.15 * 510) = 76
    ('released', 'batch', 512, 0.05 / 76),
    ('released', 'batch', 64, 0.05 / 9),          # round(0.15 * 62) = 9
])
def test_effective_lambda_per_normaliser(objective, normalizer, seq_len, want):
  c = config_lib.base_config()
  c.sctd.update(objective=objective, kl_normalizer=normalizer)
  c.data.update(seq_len=seq_len, max_predictions=80)
  assert losses.effective_lambda(c) == pytest.approx(want)
