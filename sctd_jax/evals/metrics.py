"""The fine-tuning metrics of the paper (section 4, Table 7), from
scikit-learn and SciPy.

Accuracy for most tasks, F1 (positive class 1) beside it for MRPC, Matthews
correlation for CoLA, Pearson and Spearman correlation for STS-B. Each is a
fraction (accuracy 0.85, not 85). Where a score is undefined (a constant
prediction, no positive example) it is 0, as scikit-learn already returns
for MCC and F1, so that a run's mean over seeds stays a number.
"""

import warnings

import numpy as np
from scipy import stats
from sklearn import metrics as sk


def accuracy(predictions, labels) -> float:
  return float(sk.accuracy_score(labels, predictions))


def f1(predictions, labels) -> float:
  """Binary F1 of class 1; 0 without a positive on either side."""
  return float(sk.f1_score(labels, predictions, pos_label=1, average='binary',
                           zero_division=0.0))


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation, any number of classes; 0 when a side has one class."""
  return float(sk.matthews_corrcoef(labels, predictions))


def _correlation(fn, predictions, labels) -> float:
  """SciPy's coefficient; 0 when either side is constant (SciPy warns and
  returns NaN there)."""
  x, y = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', stats.ConstantInputWarning)
    return float(fn(x, y).statistic)


def pearson(predictions, labels) -> float:
  return _correlation(stats.pearsonr, predictions, labels)


def spearman(predictions, labels) -> float:
  return _correlation(stats.spearmanr, predictions, labels)


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
