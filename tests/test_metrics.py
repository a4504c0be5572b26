"""The fine-tuning metrics against scikit-learn and SciPy, ties and
degenerate cases included."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk

from sctd_jax.evals import metrics as glue_metrics

CASES = [(n, classes, seed) for seed in range(3) for n, classes in
         ((7, 2), (50, 2), (200, 3), (31, 5))]


def _classes(n, classes, seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  # Predictions agree with the labels more often than chance.
  predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))
  return predictions, labels


@pytest.mark.parametrize('n, classes, seed', CASES)
def test_classification_metrics_match_sklearn(n, classes, seed):
  predictions, labels = _classes(n, classes, seed)
  assert glue_metrics.accuracy(predictions, labels) == pytest.approx(
      sk.accuracy_score(labels, predictions))
  assert glue_metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
      sk.matthews_corrcoef(labels, predictions))
  if classes == 2:
    assert glue_metrics.f1(predictions, labels) == pytest.approx(
        sk.f1_score(labels, predictions))


@pytest.mark.filterwarnings('ignore:A single label was found')
@pytest.mark.parametrize('predictions, labels', [
    ([1, 1, 1, 1], [0, 1, 0, 1]),      # constant prediction
    ([0, 1, 0, 1], [1, 1, 1, 1]),      # constant labels
    ([0, 0, 0], [0, 0, 0]),            # one class, no positive at all
    ([2, 2, 0], [0, 1, 2]),            # a label never predicted
    ([1, 0, 1, 0], [0, 1, 0, 1]),      # all wrong: MCC -1
])
def test_degenerate_classification_matches_sklearn(predictions, labels):
  assert glue_metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
      sk.matthews_corrcoef(labels, predictions))
  # Class 1's F1 whatever the other labels; 0 where it is undefined.
  assert glue_metrics.f1(predictions, labels) == pytest.approx(
      sk.f1_score(labels, predictions, labels=[1], average='macro', zero_division=0))
  assert glue_metrics.accuracy(predictions, labels) == pytest.approx(
      sk.accuracy_score(labels, predictions))


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('ties', [False, True])
def test_correlations_match_scipy(seed, ties):
  rng = np.random.default_rng(seed)
  labels = rng.uniform(0, 5, 60)
  predictions = labels + rng.normal(0, 1.5, 60)
  if ties:   # STS-B labels come in steps of 0.2; predictions may tie too.
    labels, predictions = np.round(labels * 5) / 5, np.round(predictions)
  assert glue_metrics.pearson(predictions, labels) == pytest.approx(
      stats.pearsonr(predictions, labels).statistic)
  assert glue_metrics.spearman(predictions, labels) == pytest.approx(
      stats.spearmanr(predictions, labels).statistic)


def test_average_ranks_match_scipy_rankdata():
  values = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 7.5])
  np.testing.assert_allclose(glue_metrics.average_ranks(values),
                             stats.rankdata(values))


def test_correlations_of_a_constant_are_zero_not_nan():
  assert glue_metrics.pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
  assert glue_metrics.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
  assert glue_metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert glue_metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_compute_names_each_metric_with_the_split_suffix():
  out = glue_metrics.compute(('accuracy', 'f1'), [1, 0, 1, 1], [1, 0, 0, 1], '_m')
  assert out == {'accuracy_m': 0.75, 'f1_m': pytest.approx(0.8)}
  with pytest.raises(ValueError, match="'auc'"):
    glue_metrics.compute(('auc',), [1], [1])
