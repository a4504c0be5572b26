"""COPA (multiple choice) and MultiRC (F1a, EM per question) from local files
in the official SuperGLUE JSONL layout, and SICK-R from SICK's tab-separated
files, scored against independent code (scikit-learn, SciPy)."""

import json

import numpy as np
import pytest

from conftest import save_word_bert
from sctd_jax.evals import finetune
from sctd_jax.evals import metrics as glue_metrics
from sctd_jax.evals import tasks
from test_finetune import _get_config

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
sklearn_metrics = pytest.importorskip('sklearn.metrics')

WORDS = ('the man woman dog sun rain fell ran broke glass wet cold hot went home '
         'door opened closed what was cause effect is true false yes no why did it').split()


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
  return save_word_bert(
      tmp_path_factory.mktemp('bert'),
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.', '?'] + WORDS)


def _sentence(rng, n=5):
  return ' '.join(rng.choice(WORDS, n)) + '.'


def _copa(path, n, seed):
  rng = np.random.default_rng(seed)
  rows = [{'premise': _sentence(rng), 'choice1': _sentence(rng), 'choice2': _sentence(rng),
           'question': ['cause', 'effect'][i % 2], 'label': int(rng.integers(2)), 'idx': i}
          for i in range(n)]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


def _multirc(path, seed):
  """Two passages, 2-3 questions each, 1-4 answer options per question."""
  rng = np.random.default_rng(seed)
  groups, lines = [], []
  for p in range(2):
    questions = []
    for q in range(int(rng.integers(2, 4))):
      answers = [{'text': _sentence(rng, 3), 'idx': len(groups) + a,
                  'label': int(rng.integers(2))} for a in range(int(rng.integers(1, 5)))]
      groups += [(p, q)] * len(answers)
      questions.append({'question': _sentence(rng, 4)[:-1] + '?', 'answers': answers, 'idx': q})
    lines.append({'idx': p, 'version': 1.1,
                  'passage': {'text': _sentence(rng, 12), 'questions': questions}})
  path.write_text(''.join(json.dumps(l) + '\n' for l in lines))
  return path, groups


def _run(bert_folder, tmp_path, task, train_file, validation_file):
  c = _get_config()
  c.init, c.task = str(bert_folder), task
  c.data.update(max_length=40, train_file=str(train_file),
                validation_file=str(validation_file))
  c.train.update(num_steps=3, batch_size=4, learning_rate=1e-3)
  results = finetune.finetune(c, str(tmp_path / 'out'))
  rows = [json.loads(l) for l in open(tmp_path / 'out' / 'predictions.jsonl')]
  return results, np.array([r['prediction'] for r in rows]), np.array([r['label'] for r in rows])


def test_question_exact_match_by_hand():
  groups = ['a', 'a', 'b', 'c', 'c', 'c']
  labels = [1, 0, 1, 0, 0, 1]
  predictions = [1, 0, 0, 0, 0, 1]      # a right, b wrong, c right
  assert glue_metrics.compute(['em', 'f1a'], predictions, labels, groups=groups) == {
      'em': pytest.approx(2 / 3), 'f1a': pytest.approx(sklearn_metrics.f1_score(labels, predictions))}


def test_copa_is_multiple_choice_over_the_two_alternatives(bert_folder, tmp_path):
  copa = tasks.get('copa')
  tokenizer = transformers.AutoTokenizer.from_pretrained(bert_folder)
  data = tasks.load(copa, str(_copa(tmp_path / 'train.jsonl', 12, 0)),
                    str(_copa(tmp_path / 'val.jsonl', 10, 1)))
  arrays = finetune.encode(tokenizer, copa, data.validation[0].examples, 40)
  assert arrays['input_ids'].shape == (10, 2, 40)
  first = data.validation[0].examples[0]
  assert tokenizer.decode(arrays['input_ids'][0, 1], skip_special_tokens=True) == (
      f"{first['premise']} what was the {first['question']}? {first['choice2']}")
  results, predictions, labels = _run(bert_folder, tmp_path, 'copa',
                                      tmp_path / 'train.jsonl', tmp_path / 'val.jsonl')
  assert len(predictions) == 10 and set(predictions) <= {0, 1}
  assert results['accuracy'] == pytest.approx(np.mean(predictions == labels))


def test_multirc_scores_f1a_over_options_and_em_per_question(bert_folder, tmp_path):
  train, _ = _multirc(tmp_path / 'train.jsonl', 0)
  val, groups = _multirc(tmp_path / 'val.jsonl', 1)
  results, predictions, labels = _run(bert_folder, tmp_path, 'multirc', train, val)
  assert len(predictions) == len(groups)
  want_labels = [a['label'] for l in map(json.loads, open(val))
                 for q in l['passage']['questions'] for a in q['answers']]
  assert labels.tolist() == want_labels
  assert results['f1a'] == pytest.approx(sklearn_metrics.f1_score(labels, predictions,
                                                                  zero_division=0))
  by_question = {}
  for g, p, y in zip(groups, predictions, labels):
    by_question[g] = by_question.get(g, True) and p == y
  assert results['em'] == pytest.approx(np.mean(list(by_question.values())))


def test_sick_r_is_regression_on_the_relatedness_score(bert_folder, tmp_path):
  scipy_stats = pytest.importorskip('scipy.stats')
  rng = np.random.default_rng(0)
  for name, n in (('SICK_train.txt', 16), ('SICK_trial.txt', 12)):
    rows = ['pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment']
    rows += [f'{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.uniform(1, 5):.1f}\tNEUTRAL'
             for i in range(n)]
    (tmp_path / name).write_text('\n'.join(rows) + '\n')
  results, predictions, labels = _run(bert_folder, tmp_path, 'sickr',
                                      tmp_path / 'SICK_train.txt', tmp_path / 'SICK_trial.txt')
  trial = [l.split('\t') for l in (tmp_path / 'SICK_trial.txt').read_text().splitlines()[1:]]
  np.testing.assert_allclose(labels, [float(r[3]) for r in trial])
  assert len(set(predictions.round(6))) > 1   # a regression output, not classes
  assert results['spearman'] == pytest.approx(scipy_stats.spearmanr(predictions, labels)[0])
  assert results['pearson'] == pytest.approx(scipy_stats.pearsonr(predictions, labels)[0])
