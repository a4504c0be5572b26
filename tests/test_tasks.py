"""The task registry: Table 7's values, the built-in tasks, and local files
with GLUE's column names, including each way a file can be wrong."""

import json
import re
import subprocess
import sys

import pytest

from conftest import offline_env
from sctd_jax.config import ConfigError
from sctd_jax.data import synthetic
from sctd_jax.evals import tasks
from test_train import ROOT

# Paper, Appendix A.2, Table 7: lr, batch size, steps or epochs.
TABLE_7 = {'cola': (2e-5, 32, 2668, -1), 'mrpc': (1e-5, 32, 1148, -1),
           'stsb': (2e-5, 32, 1799, -1), 'rte': (1e-5, 16, 2036, -1),
           'mnli': (1e-5, 256, 15484, -1), 'sst2': (1e-5, 64, 10467, -1),
           'boolq': (1e-5, 16, -1, 10), 'cb': (2e-5, 16, -1, 20)}


@pytest.mark.parametrize('name', TABLE_7)
def test_paper_tasks_have_table_7_hyperparameters(name):
  task = tasks.get(name)
  assert (task.learning_rate, task.batch_size, task.num_steps,
          task.num_epochs) == TABLE_7[name]
  assert task.hub[0] == ('aps/super_glue' if name in ('boolq', 'cb') else 'nyu-mll/glue')
  assert task.hub[1] == name


def test_labels_columns_and_metrics_follow_glue():
  get = tasks.get
  assert get('stsb').num_labels == 1 and get('stsb').metrics == ('pearson', 'spearman')
  assert get('cola').metrics == ('mcc',) and get('mrpc').metrics == ('accuracy', 'f1')
  assert get('mnli').num_labels == get('cb').num_labels == 3
  assert get('mnli').text_columns == get('cb').text_columns == ('premise', 'hypothesis')
  assert get('boolq').text_columns == ('question', 'passage')
  assert get('rte').text_columns == ('sentence1', 'sentence2')
  assert get('sst2').text_columns == ('sentence',)
  assert get('mnli').validation_splits == (('validation_matched', '_m'),
                                           ('validation_mismatched', '_mm'))
  with pytest.raises(ConfigError, match="task='qnli'"):
    tasks.get('qnli')


def test_train_steps_take_the_config_then_the_task():
  mrpc, cb = tasks.get('mrpc'), tasks.get('cb')
  assert tasks.train_steps(mrpc, 3668, 32) == 1148
  assert tasks.train_steps(cb, 250, 16) == 313           # ceil(20 * 250 / 16)
  assert tasks.train_steps(mrpc, 3668, 32, num_epochs=2) == 230
  assert tasks.train_steps(cb, 250, 16, num_steps=7) == 7


@pytest.mark.parametrize('name, columns, num_labels', [
    ('tense', ('sentence',), 3), ('subj_num', ('sentence',), 2),
    ('paraphrase', ('sentence1', 'sentence2'), 2)])
def test_builtin_tasks_are_offline_sized_and_labelled(name, columns, num_labels):
  task = tasks.get(name)
  data = tasks.load(task)
  (split,) = data.validation
  assert (split.name, split.suffix) == ('validation', '')
  assert len(data.train) == 2000 and len(split.examples) == 500
  for examples in (data.train, split.examples):
    assert examples.column_names == [*columns, 'label']
    assert set(examples['label']) == set(range(num_labels))
  assert data.train[0] != split.examples[0]   # other seeds
  if name == 'tense':
    sentences = synthetic.labelled_sentences(tasks.BUILTIN_SEEDS['validation'], 500)
    assert list(split.examples['sentence']) == [s.text for s in sentences]
    assert list(split.examples['label']) == [synthetic.TENSES.index(s.tense)
                                             for s in sentences]


def _write(path, rows, kind):
  if kind == 'jsonl':
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  else:
    sep = '\t' if kind == 'tsv' else ','
    lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
    path.write_text('\n'.join(lines) + '\n')
  return str(path)


STSB_ROWS = [{'sentence1': 'the cat sat.', 'sentence2': 'a cat sat.', 'label': 4.2},
             {'sentence1': 'dogs bark.', 'sentence2': 'it rained.', 'label': 0.0},
             {'sentence1': "it's 5 o'clock.", 'sentence2': 'five "o clock".', 'label': 3.5}]


@pytest.mark.parametrize('kind', ['csv', 'tsv', 'jsonl'])
def test_local_files_load_with_glue_columns(tmp_path, kind):
  train = _write(tmp_path / f'train.{kind}', STSB_ROWS, kind)
  validation = _write(tmp_path / f'dev.{kind}', STSB_ROWS[:2], kind)
  data = tasks.load(tasks.get('stsb'), train, validation)
  assert data.train.to_list() == STSB_ROWS
  (split,) = data.validation
  assert (split.name, split.suffix, len(split.examples)) == ('validation', '', 2)


def test_tsv_quotes_are_text_as_in_glue_files(tmp_path):
  path = tmp_path / 'cola.tsv'
  path.write_text('sentence\tlabel\n"Quoted, he said.\t1\nit\'s "fine".\t0\n')
  data = tasks.load(tasks.get('cola'), str(path), str(path))
  assert list(data.train['sentence']) == ['"Quoted, he said.', 'it\'s "fine".']


def test_local_files_replace_a_tasks_own_splits(tmp_path):
  rows = [{'premise': 'p', 'hypothesis': 'h', 'label': i} for i in (0, 1, 2)]
  path = _write(tmp_path / 'mnli.jsonl', rows, 'jsonl')
  data = tasks.load(tasks.get('mnli'), path, path)
  assert [s.name for s in data.validation] == ['validation']   # no _m / _mm


ROWS = [{'sentence': 'a good film.', 'label': 1}, {'sentence': 'a bad film.', 'label': 0}]


@pytest.mark.parametrize('name, rows, message', [
    ('nolabel.csv', [{'sentence': 'x', 'score': 1}],
     "no column 'label'; the sst2 task reads columns 'sentence', 'label'"),
    ('text.jsonl', [{'text': 'x', 'label': 1}], "no column 'sentence'"),
    ('range.csv', ROWS + [{'sentence': 'meh.', 'label': 2}],
     "column 'label' of example 2 (from 0) is 2, but each label of the sst2 task "
     'must be an integer class in [0, 1]'),
    ('names.jsonl', [{'sentence': 'x', 'label': 'positive'}],
     "is 'positive', but each label"),
    ('gap.jsonl', ROWS + [{'sentence': None, 'label': 0}],
     "column 'sentence' has empty values"),
])
def test_bad_files_are_refused_naming_file_column_and_fix(tmp_path, name, rows, message):
  path = _write(tmp_path / name, rows, name.rpartition('.')[2])
  good = _write(tmp_path / 'good.csv', ROWS, 'csv')
  with pytest.raises(ConfigError) as error:
    tasks.load(tasks.get('sst2'), good, path)
  assert f'data.validation_file={path!r}' in str(error.value)
  assert message in str(error.value)


def test_missing_empty_unknown_and_unpaired_files_are_refused(tmp_path):
  good = _write(tmp_path / 'good.csv', ROWS, 'csv')
  sst2 = tasks.get('sst2')
  cases = {str(tmp_path / 'absent.csv'): 'no such file',
           str(tmp_path / 'train.parquet'):
               "unknown file type '.parquet'; use one of .csv, .tsv, .txt, .jsonl"}
  (tmp_path / 'empty.csv').write_text('')
  cases[str(tmp_path / 'empty.csv')] = 'the file is empty'
  (tmp_path / 'header.tsv').write_text('sentence\tlabel\n')
  cases[str(tmp_path / 'header.tsv')] = 'with at least one example'
  for path, message in cases.items():
    with pytest.raises(ConfigError, match='data.train_file=') as error:
      tasks.load(sst2, path, good)
    assert path in str(error.value) and message in str(error.value), error.value
  with pytest.raises(ConfigError, match="data.validation_file='' is empty, but "
                     'data.train_file is set: give both files'):
    tasks.load(sst2, good, '')


def test_a_hub_task_without_the_hub_says_how_to_run_it_offline(tmp_path):
  """With the Hub offline as a user sets it (HF_HUB_OFFLINE=1, empty caches)."""
  code = ('from sctd_jax.config import ConfigError\n'
          'from sctd_jax.evals import tasks\n'
          'try:\n'
          "  tasks.load(tasks.get('mrpc'))\n"
          'except ConfigError as error:\n'
          '  print(error)\n')
  run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=offline_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert re.search(r'mrpc: the Hub dataset nyu-mll/glue mrpc could not be loaded .*'
                   r'--local-dir DIR\) and pass --config.data.dataset=DIR', run.stdout,
                   re.DOTALL), run.stdout
