"""SQuAD v1.1/v2.0 on tiny local files in the official JSON format, scored
against the official evaluation scripts' logic written out here."""

import collections
import json
import re
import string
import types

import numpy as np
import pytest

from conftest import save_word_bert
from sctd_jax.evals import squad
from sctd_jax.evals import squad_metrics

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

WORDS = ('the cat sat on mat in paris city of france is capital a dog ran to park '
         'where did what who when was it blue red sky tree house big small near far '
         'river flows through london england').split()


# The official evaluate-v2.0.py functions, written out independently.
def official_normalize(s):
  def remove_articles(text):
    return re.sub(re.compile(r'\b(a|an|the)\b', re.UNICODE), ' ', text)
  def white_space_fix(text):
    return ' '.join(text.split())
  def remove_punc(text):
    exclude = set(string.punctuation)
    return ''.join(ch for ch in text if ch not in exclude)
  return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_f1(gold, pred):
  gold_toks, pred_toks = official_normalize(gold).split(), official_normalize(pred).split()
  common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
  num_same = sum(common.values())
  if len(gold_toks) == 0 or len(pred_toks) == 0:
    return int(gold_toks == pred_toks)
  if num_same == 0:
    return 0
  precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
  return (2 * precision * recall) / (precision + recall)


def official_scores(golds, preds):
  exact, f1 = {}, {}
  for qid, answers in golds.items():
    answers = [a for a in answers if official_normalize(a)] or ['']
    exact[qid] = max(int(official_normalize(a) == official_normalize(preds[qid]))
                     for a in answers)
    f1[qid] = max(official_f1(a, preds[qid]) for a in answers)
  return exact, f1


def official_best_thresh(preds, scores, na_probs, golds):
  has_ans = {k: bool([a for a in v if official_normalize(a)]) for k, v in golds.items()}
  cur = best = sum(1 for k in has_ans if not has_ans[k])
  thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if has_ans[qid]:
      diff = scores[qid]
    else:
      diff = -1 if preds[qid] else 0
    cur += diff
    if cur > best:
      best, thresh = cur, na_probs[qid]
  return 100.0 * best / len(scores), thresh


def test_metrics_match_the_official_scripts():
  golds = {'a': ['The Cat', 'cat!'], 'b': ['Paris, France'], 'c': [], 'd': ['big red house'],
           'e': []}
  preds = {'a': 'a cat', 'b': 'paris', 'c': 'the dog', 'd': 'red house near', 'e': 'x'}
  odds = {'a': -2.0, 'b': 0.5, 'c': 1.5, 'd': -0.1, 'e': 0.7}
  exact, f1 = official_scores(golds, preds)
  got = squad_metrics.evaluate(preds, golds, odds)
  assert got['exact_match'] == pytest.approx(100 * np.mean(list(exact.values())))
  assert got['f1'] == pytest.approx(100 * np.mean(list(f1.values())))
  best_f1, thresh = official_best_thresh(preds, f1, odds, golds)
  assert (got['best_f1'], got['best_f1_thresh']) == pytest.approx((best_f1, thresh))
  assert got['best_exact'] == pytest.approx(official_best_thresh(preds, exact, odds, golds)[0])
  assert f1['b'] == pytest.approx(2 / 3) and exact['a'] == 1   # not trivially 0 or 1


def _squad_file(path, v2, seed):
  rng = np.random.default_rng(seed)
  paragraphs = []
  for p in range(3):
    words = list(rng.choice(WORDS, 60))   # long: several windows of 48 tokens
    context = ' '.join(words) + '.'
    qas = []
    for q in range(3):
      first = int(rng.integers(0, 55))
      text = ' '.join(words[first:first + 3])
      start = len(' '.join(words[:first])) + (1 if first else 0)
      assert context[start:start + len(text)] == text
      qa = {'id': f'{seed}-{p}-{q}', 'question': ' '.join(rng.choice(WORDS, 4)) + '?',
            'answers': [{'text': text, 'answer_start': start}]}
      if v2:
        qa['is_impossible'] = q == 2
        if q == 2:
          qa['answers'] = []
      qas.append(qa)
    paragraphs.append({'context': context, 'qas': qas})
  path.write_text(json.dumps({'version': 'v2.0' if v2 else '1.1',
                              'data': [{'title': 't', 'paragraphs': paragraphs}]}))
  return path


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
  return save_word_bert(
      tmp_path_factory.mktemp('bert'),
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.', '?', ','] + WORDS,
      head='BertForMaskedLM')


def test_windows_label_the_answer_tokens_and_map_back_to_the_text(bert_folder, tmp_path):
  examples, v2 = squad.read_squad(str(_squad_file(tmp_path / 'd.json', True, 1)))
  assert v2 and len(examples) == 9
  tokenizer = transformers.AutoTokenizer.from_pretrained(bert_folder)
  features = squad.make_features(tokenizer, examples, 48, 16)
  assert np.bincount(features['example']).min() >= 2   # long contexts are windowed
  labelled = set()
  for f, index in enumerate(features['example']):
    start, end = features['label'][f]
    example = examples[index]
    if (start, end) == (0, 0):
      continue
    offsets = features['offsets'][f]
    assert example.context[offsets[start, 0]:offsets[end, 1]] == example.answers[0]
    labelled.add(index)
  answerable = {i for i, e in enumerate(examples) if e.answers}
  assert labelled == answerable


@pytest.mark.parametrize('v2', [False, True])
def test_finetune_writes_official_predictions_scored_as_the_official_script(
    bert_folder, tmp_path, v2):
  args = types.SimpleNamespace(
      init=str(bert_folder), train_file=str(_squad_file(tmp_path / 't.json', v2, 2)),
      dev_file=str(_squad_file(tmp_path / 'd.json', v2, 3)), max_length=48, doc_stride=16,
      max_answer_length=30, learning_rate=1e-3, batch_size=8, num_epochs=1.0,
      eval_batch_size=16, seed=0, num_seeds=1)
  results = squad.run(args, str(tmp_path / 'out'))
  predictions = json.loads((tmp_path / 'out' / 'predictions.json').read_text())
  dev = json.loads((tmp_path / 'd.json').read_text())
  golds = {qa['id']: [a['text'] for a in qa['answers']]
           for p in dev['data'][0]['paragraphs'] for qa in p['qas']}
  assert set(predictions) == set(golds)
  assert all(isinstance(v, str) for v in predictions.values())
  exact, f1 = official_scores(golds, predictions)
  assert results['exact_match'] == pytest.approx(100 * np.mean(list(exact.values())))
  assert results['f1'] == pytest.approx(100 * np.mean(list(f1.values())))
  assert results['task'] == ('squad_v2' if v2 else 'squad_v1')
  if v2:
    odds = json.loads((tmp_path / 'out' / 'null_odds.json').read_text())
    assert set(odds) == set(golds)
    # The written answers are the thresholded ones: '' exactly above it.
    assert all((predictions[q] == '') == (odds[q] > results['best_f1_thresh'])
               for q in golds)
  else:
    assert all(predictions.values())   # v1.1 always answers


@pytest.mark.parametrize('text, message', [
    ('{"data": [{"paragraphs": [', 'is not SQuAD JSON \\(Expecting'),
    ('{"data": [{"paragraphs": [{"context": "x"}]}]}',
     "is not SQuAD JSON: .* lacks a field .*KeyError: 'qas'"),
    ('[1, 2]', 'is not SQuAD JSON: it has no "data" list'),
])
def test_a_file_that_is_not_squad_json_is_named(tmp_path, text, message):
  from sctd_jax.hf import format as hf_format
  path = tmp_path / 'train.json'
  path.write_text(text)
  with pytest.raises(hf_format.FormatError, match=f'train.json {message}'):
    squad.read_squad(str(path))
