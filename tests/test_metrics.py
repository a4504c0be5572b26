"""The fine-tuning metrics against values worked out by hand, and the rule
that an undefined score is 0, not NaN."""

import math

import pytest

from sctd_jax.evals import metrics as glue_metrics


def test_binary_scores_match_hand_counts():
  # TP 2 (0, 3), FP 1 (1), FN 1 (4), TN 2 (2, 5).
  predictions, labels = [1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0]
  assert glue_metrics.accuracy(predictions, labels) == pytest.approx(4 / 6)
  assert glue_metrics.f1(predictions, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
  # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 3 / 9.
  assert glue_metrics.matthews_corrcoef(predictions, labels) == pytest.approx(1 / 3)


def test_multiclass_mcc_matches_gorodkins_formula_by_hand():
  # 3 of 6 right; every class 2 true and 2 predicted:
  # (c s - sum t p) / sqrt((s^2 - sum p^2)(s^2 - sum t^2)) = (18 - 12) / 24.
  predictions, labels = [0, 1, 2, 0, 1, 2], [0, 1, 2, 1, 2, 0]
  assert glue_metrics.matthews_corrcoef(predictions, labels) == pytest.approx(0.25)


def test_correlations_match_hand_values_with_ties():
  assert glue_metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
  # Ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5).
  assert glue_metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
      4.5 / math.sqrt(22.5))
  assert glue_metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.filterwarnings('ignore:A single label was found')
@pytest.mark.parametrize('predictions, labels', [
    ([1, 1, 1, 1], [0, 1, 0, 1]),      # constant prediction
    ([0, 1, 0, 1], [1, 1, 1, 1]),      # constant labels
    ([0, 0, 0], [0, 0, 0]),            # one class, no positive at all
])
def test_undefined_scores_are_zero_not_nan(predictions, labels):
  assert glue_metrics.matthews_corrcoef(predictions, labels) == 0.0
  assert glue_metrics.pearson(predictions, labels) == 0.0
  assert glue_metrics.spearman(predictions, labels) == 0.0
  if 1 not in predictions + labels:
    assert glue_metrics.f1(predictions, labels) == 0.0


def test_compute_names_each_metric_with_the_split_suffix():
  out = glue_metrics.compute(('accuracy', 'f1'), [1, 0, 1, 1], [1, 0, 0, 1], '_m')
  assert out == {'accuracy_m': 0.75, 'f1_m': pytest.approx(0.8)}
  with pytest.raises(ValueError, match="'auc'"):
    glue_metrics.compute(('auc',), [1], [1])
