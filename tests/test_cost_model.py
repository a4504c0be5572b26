"""The cost model against docs/design.md section 2's figures and a hand count."""

import pytest

from sctd_jax import config as config_lib
from sctd_jax import cost_model


def _bert_base_hand_count():
  """Forward FLOPs of BERT-base at S=512 by hand: (one full layer, the full
  path, the dropped path). 12 layers: full 0-4, cross 5, kept-only 6-10,
  full 11; 80 predictions in the head."""
  d, I, S, k, V, P = 768, 3072, 512, 256, 30522, 80
  full_layer = S * (8 * d * d + 4 * d * I + 4 * S * d)
  cross = k * (4 * d * d + 4 * d * I + 4 * S * d) + S * 4 * d * d
  kept = k * (8 * d * d + 4 * d * I + 4 * k * d)
  head = P * (2 * d * d + 2 * d * V)
  return full_layer, 12 * full_layer + head, 6 * full_layer + cross + 5 * kept + head


def test_bert_base_ratios_match_a_hand_count_and_design():
  c = config_lib.base_config()
  c.model.vocab_size = 30522
  fi = 10
  _, full, drop = _bert_base_hand_count()
  ratios = cost_model.step_ratios(c)
  assert ratios['token_drop'] == pytest.approx(drop / full, rel=1e-12)
  assert ratios['sctd'] == pytest.approx((fi * drop + full) / fi / full, rel=1e-12)
  # The design's figures, given to three digits ("about 0.755" is 0.7556).
  assert ratios['token_drop'] == pytest.approx(0.7556, abs=5e-5)
  assert ratios['sctd'] == pytest.approx(0.8556, abs=5e-5)


def test_hand_count_for_a_small_model():
  c = config_lib.base_config()
  c.model.update(vocab_size=100, hidden_size=4, num_layers=4, intermediate_size=8)
  c.data.update(seq_len=10, max_predictions=2)
  c.sctd.fi = 5
  d, I, S, k, V, P = 4, 8, 10, 5, 100, 2
  full_layer = S * (8 * d * d + 4 * d * I + 4 * S * d)
  cross = k * (4 * d * d + 4 * d * I + 4 * S * d) + S * 4 * d * d
  kept = k * (8 * d * d + 4 * d * I + 4 * k * d)
  head = P * (2 * d * d + 2 * d * V)
  full = 4 * full_layer + head
  drop = 2 * full_layer + cross + kept + head   # full 0, cross 1, kept 2, full 3
  ratios = cost_model.step_ratios(c)
  assert ratios['token_drop'] == pytest.approx(drop / full, rel=1e-12)
  assert ratios['sctd'] == pytest.approx((5 * drop + full) / 5 / full, rel=1e-12)


def test_shared_prefix_saves_the_prefix_once_per_sctd_step():
  c = config_lib.base_config()
  c.model.vocab_size = 30522
  c.sctd.share_prefix = True
  shared = cost_model.step_ratios(c)['sctd']
  # Layers 0-4, before the cross layer, run once, not twice, per Fi=10 steps.
  full_layer, full, drop = _bert_base_hand_count()
  assert shared == pytest.approx((10 * drop + full - 5 * full_layer) / 10 / full, rel=1e-12)


def test_interval_flops_and_mfu_by_hand():
  c = config_lib.base_config()
  c.model.update(vocab_size=100, hidden_size=4, num_layers=4, intermediate_size=8)
  c.data.update(seq_len=10, max_predictions=2)
  c.train.batch_size = 3
  d, I, S, k, V, P = 4, 8, 10, 5, 100, 2
  full_layer = S * (8 * d * d + 4 * d * I + 4 * S * d)
  cross = k * (4 * d * d + 4 * d * I + 4 * S * d) + S * 4 * d * d
  kept = k * (8 * d * d + 4 * d * I + 4 * k * d)
  head = P * (2 * d * d + 2 * d * V)
  full, drop = 4 * full_layer + head, 2 * full_layer + cross + kept + head
  # 10 steps, 2 of them SCTD (both forwards), training = 3 x forward x batch.
  want = 3 * 3 * (2 * (drop + full) + 8 * drop)
  assert cost_model.interval_flops(c, 10, 2) == pytest.approx(want)
  c.sctd.share_prefix = True   # Layer 0 (before the cross layer 1) once.
  assert cost_model.interval_flops(c, 10, 2) == pytest.approx(want - 2 * 9 * full_layer)
  c.method = 'baseline'
  assert cost_model.interval_flops(c, 10, 0) == pytest.approx(3 * 3 * 10 * full)
  u = cost_model.utilization(1e12, 2.0, 1e13)
  assert u == {'model_flops_per_s': 5e11, 'mfu': 0.05}


def test_peak_table_matches_device_kinds():
  peak = lambda kind: cost_model.chip_peak(kind)[1]
  assert peak('NVIDIA H100 80GB HBM3') == 989e12
  assert peak('NVIDIA H200') == 989e12
  assert peak('NVIDIA A100-SXM4-80GB') == 312e12
  assert peak('TPU v5 lite') == 197e12 and peak('TPU v5') == 459e12
  assert peak('TPU v5p') == 459e12 and peak('TPU v4') == 275e12
  assert cost_model.chip_peak('cpu') is None
