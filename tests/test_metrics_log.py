"""A metrics.jsonl row summarising log_every > 1 steps, against hand values."""

import math

import pytest

from sctd_jax import metrics_log

NAN = math.nan


def _step(loss, sctd, lr, kl=NAN, full=NAN):
  return dict(loss=loss, grad_norm=2 * loss, learning_rate=lr, sctd_step=sctd,
              mlm_drop=loss - 0.5, mlm_full=full, kl_global=kl, kl_local=kl / 2,
              skipped=False)


def test_three_steps_with_two_sctd_steps_in_a_row():
  steps = [_step(1.0, True, 0.1, kl=0.4, full=3.0), _step(2.0, False, 0.2),
           _step(4.5, True, 0.3, kl=0.8, full=5.0)]
  row = metrics_log.summarize(30, steps, seconds=6.0, tokens_per_step=512)
  assert row == pytest.approx(dict(
      step=30, loss=2.5, grad_norm=5.0,
      learning_rate=0.3,   # the last step's, not a mean
      sctd_step=2,         # a count over the interval
      mlm_drop=2.0,        # (0.5 + 1.5 + 4.0) / 3
      mlm_full=4.0, kl_global=0.6, kl_local=0.3,   # over the two steps that had them
      step_time_s=2.0, tokens_per_s=256.0, skipped_steps=0), rel=1e-12)


def test_a_row_without_sctd_steps_has_null_kl():
  row = metrics_log.summarize(2, [_step(1.0, False, 0.1), _step(3.0, False, 0.1)], 1.0, 10)
  assert (row['kl_global'], row['kl_local'], row['mlm_full']) == (None, None, None)
  assert row['sctd_step'] == 0 and row['loss'] == pytest.approx(2.0)
