"""SQuAD scoring as the official evaluation scripts do it (v1.1 and v2.0):
answer normalisation, exact match and token F1 against the best gold
answer, and for v2.0 the no-answer threshold chosen on the dev set."""

import collections
import re
import string

_ARTICLES = re.compile(r'\b(a|an|the)\b', re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lower case, punctuation, articles and extra whitespace removed."""
  text = ''.join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', text).split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
  """Token-overlap F1 of the normalised answers; an empty answer (v2.0's
  no-answer) scores 1 only against another empty one."""
  pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def gold_answers(answers: list[str]) -> list[str]:
  """The gold texts; a question with none (v2.0 unanswerable) has ''."""
  return [a for a in answers if normalize_answer(a)] or ['']


def per_question(predictions: dict[str, str], golds: dict[str, list[str]]):
  """{qid: exact match}, {qid: F1}, each the max over the gold answers."""
  em, f = {}, {}
  for qid, answers in golds.items():
    answers = gold_answers(answers)
    em[qid] = max(exact_match(predictions[qid], a) for a in answers)
    f[qid] = max(f1(predictions[qid], a) for a in answers)
  return em, f


def best_threshold(predictions: dict[str, str], scores: dict[str, float],
                   null_odds: dict[str, float], golds: dict[str, list[str]]):
  """(best score in %, threshold): answering '' when null_odds > threshold,
  the official v2.0 script's sweep over the sorted null odds (`scores` are
  the per-question scores of the non-empty `predictions`)."""
  has_answer = {qid: gold_answers(a) != [''] for qid, a in golds.items()}
  current = best = sum(not v for v in has_answer.values())
  threshold = 0.0
  for qid in sorted(null_odds, key=null_odds.get):
    if has_answer[qid]:
      current += scores[qid]
    elif predictions[qid]:
      current -= 1
    if current > best:
      best, threshold = current, null_odds[qid]
  return 100.0 * best / len(golds), threshold


def evaluate(predictions: dict[str, str], golds: dict[str, list[str]],
             null_odds: dict[str, float] | None = None) -> dict:
  """exact_match and f1 in % over the questions; with `null_odds` (v2.0), the
  no-answer threshold chosen on these questions for F1 (`best_f1_thresh`),
  the scores under it (`best_exact`, `best_f1`) and the predictions it
  makes (`thresholded`)."""
  em, f = per_question(predictions, golds)
  out = {'exact_match': 100.0 * sum(em.values()) / len(golds),
         'f1': 100.0 * sum(f.values()) / len(golds)}
  if null_odds is not None:
    out['best_exact'], _ = best_threshold(predictions, em, null_odds, golds)
    out['best_f1'], threshold = best_threshold(predictions, f, null_odds, golds)
    out['best_f1_thresh'] = threshold
  return out


def apply_threshold(predictions: dict[str, str], null_odds: dict[str, float],
                    threshold: float) -> dict[str, str]:
  """The final answers: '' where the null odds exceed the threshold."""
  return {qid: '' if null_odds[qid] > threshold else text
          for qid, text in predictions.items()}
