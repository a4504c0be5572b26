"""The fine-tuning metrics of the paper (section 4, Table 7), in NumPy.

Accuracy for most tasks, F1 (positive class 1) beside it for MRPC, Matthews
correlation for CoLA, Pearson and Spearman correlation for STS-B. Each is a
fraction (accuracy 0.85, not 85) and is the same number as scikit-learn's or
SciPy's; where those are undefined (a constant prediction, no positive
example) the score is 0, as scikit-learn returns for MCC, so that a run's
mean over seeds stays a number.
"""

import numpy as np


def accuracy(predictions, labels) -> float:
  return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions, labels) -> float:
  """Binary F1 of class 1: 2 TP / (2 TP + FP + FN); 0 without a positive."""
  predicted, actual = np.asarray(predictions) == 1, np.asarray(labels) == 1
  true_positives = np.sum(predicted & actual)
  denominator = np.sum(predicted) + np.sum(actual)
  return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation for any number of classes (Gorodkin's R_K, which
  is the phi coefficient for two); 0 when a side has a single class."""
  classes, both = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  actual, predicted = np.split(both, 2)
  n = len(actual)
  confusion = np.zeros((len(classes), len(classes)))
  np.add.at(confusion, (actual, predicted), 1)
  true_counts, predicted_counts = confusion.sum(1), confusion.sum(0)
  covariance = np.trace(confusion) * n - true_counts @ predicted_counts
  denominator = np.sqrt((n ** 2 - predicted_counts @ predicted_counts) *
                        (n ** 2 - true_counts @ true_counts))
  return float(covariance / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
  """Pearson correlation; 0 when either side is constant."""
  x = np.asarray(predictions, np.float64)
  y = np.asarray(labels, np.float64)
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denominator) if denominator else 0.0


def average_ranks(values) -> np.ndarray:
  """Ranks from 1; tied values share the mean of their ranks (SciPy's
  'average' method, which Spearman's coefficient needs)."""
  _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
  ranks_before = np.cumsum(counts) - counts
  return (ranks_before + (counts + 1) / 2)[inverse]


def spearman(predictions, labels) -> float:
  """Spearman correlation: Pearson's of the average ranks."""
  return pearson(average_ranks(predictions), average_ranks(labels))


def question_exact_match(predictions, labels, groups) -> float:
  """MultiRC's EM: the share of questions (`groups`, one id per answer
  option) whose every answer option is predicted right."""
  right = np.asarray(predictions) == np.asarray(labels)
  _, question = np.unique(np.asarray(groups), return_inverse=True)
  wrong = np.zeros(question.max() + 1, bool)
  np.logical_or.at(wrong, question, ~right)
  return float(np.mean(~wrong))


# MultiRC's F1a is the binary F1 over all answer options.
METRICS = {'accuracy': accuracy, 'f1': f1, 'f1a': f1, 'mcc': matthews_corrcoef,
           'pearson': pearson, 'spearman': spearman}
GROUPED = {'em': question_exact_match}


def compute(names, predictions, labels, suffix: str = '',
            groups=None) -> dict[str, float]:
  """{name + suffix: score} for the metric `names` of a task, e.g. MNLI's
  matched split as {'accuracy_m': ...}; `groups` (question ids) for 'em'."""
  unknown = set(names) - METRICS.keys() - GROUPED.keys()
  if unknown:
    raise ValueError(f'Unknown metrics {sorted(unknown)}; known: '
                     f'{sorted({**METRICS, **GROUPED})}.')
  return {name + suffix: (GROUPED[name](predictions, labels, groups)
                          if name in GROUPED else METRICS[name](predictions, labels))
          for name in names}
