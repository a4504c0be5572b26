"""Suites: several tasks from local files, one summary.json and a paper-style
table; the best-epoch score is never below the last step's."""

import json
import logging
import re
import types

import numpy as np
import pytest

from sctd_jax.evals import finetune
from sctd_jax.evals import suites
from test_superglue import _copa, bert_folder  # noqa: F401 (fixture)


def test_suite_writes_summary_and_table_from_each_task(bert_folder, tmp_path):
  data = tmp_path / 'data'
  (data / 'copa').mkdir(parents=True)
  _copa(data / 'copa' / 'train.jsonl', 16, 0)
  _copa(data / 'copa' / 'validation.jsonl', 10, 1)
  (data / 'cb').mkdir()
  rng = np.random.default_rng(0)
  for split in ('train', 'validation'):
    rows = [{'premise': 'the man ran home.', 'hypothesis': 'the dog ran.',
             'label': int(rng.integers(3))} for _ in range(8)]
    (data / 'cb' / f'{split}.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  args = types.SimpleNamespace(init=str(bert_folder), suite='superglue', tasks='copa,cb',
                               data_dir=str(data), squad_dir='', seed=0, num_seeds=1,
                               max_length=48, max_steps=2)
  summary = suites.run(args, str(tmp_path / 'out'))
  for task in ('copa', 'cb'):
    results = json.loads((tmp_path / 'out' / task / 'eval_results.json').read_text())
    assert summary['scores'][task] == pytest.approx(100 * results['accuracy'])
    config = json.loads((tmp_path / 'out' / task / 'config.json').read_text())
    assert config['eval_every_epoch'] and config['data']['max_length'] == 48
  assert summary['average'] == pytest.approx(np.mean(list(summary['scores'].values())))
  assert json.loads((tmp_path / 'out' / 'summary.json').read_text()) == summary
  table = (tmp_path / 'out' / 'table.md').read_text().splitlines()
  assert table[0] == '| | copa | cb | Avg. |'
  assert table[2] == f'| {bert_folder.name} | ' + ' | '.join(
      f'{v:.2f}' for v in [*summary['scores'].values(), summary['average']]) + ' |'


def test_paper_table_has_a_row_per_run_and_dashes_for_missing_tasks():
  lines = suites.paper_table({'base': {'scores': {'rte': 70.0, 'cb': 80.0}, 'average': 75.0},
                              'sctd': {'scores': {'rte': 72.5}, 'average': 72.5}})
  assert lines == ['| | rte | cb | Avg. |', '|---|---|---|---|',
                   '| base | 70.00 | 80.00 | 75.00 |', '| sctd | 72.50 | - | 72.50 |']


def test_unknown_suite_task_is_a_user_error(tmp_path):
  args = types.SimpleNamespace(init='x', suite='glue', tasks='copa,nope', data_dir='',
                               squad_dir='', seed=0, num_seeds=1, max_length=-1,
                               max_steps=-1)
  with pytest.raises(suites.cli.UserError, match="unknown \\['nope'\\]"):
    suites.run(args, str(tmp_path))
  # Checked before the tasks ahead of it run (init 'x' would fail in copa).
  args.tasks = 'copa,squad_v1'
  with pytest.raises(suites.cli.UserError, match='train-v1.1.json and dev-v1.1.json'):
    suites.run(args, str(tmp_path))


def test_best_epoch_is_the_best_of_the_epochs_and_the_last_is_the_plain_run(
    bert_folder, tmp_path, caplog):
  data = tmp_path / 'copa'
  data.mkdir()
  c = finetune.base_config()
  c.init, c.task = str(bert_folder), 'copa'
  c.data.update(max_length=32, train_file=str(_copa(data / 'train.jsonl', 8, 0)),
                validation_file=str(_copa(data / 'validation.jsonl', 12, 1)))
  c.train.update(num_steps=3, batch_size=4, learning_rate=3e-3)   # 2 steps an epoch
  last = finetune.finetune(c, str(tmp_path / 'last'))['accuracy']
  c.eval_every_epoch = True
  with caplog.at_level(logging.INFO):
    best = finetune.finetune(c, str(tmp_path / 'best'))['accuracy']
  epochs = [float(m.group(1)) for r in caplog.records
            if (m := re.fullmatch(r'copa seed 0: epoch \d, step \d of 3: accuracy ([\d.]+)',
                                  r.getMessage()))]
  assert len(epochs) == 2, caplog.text   # steps 2 and 3
  # Chunked by epoch, training runs the same steps as in one call, so the last
  # epoch scores what the plain run does; the result is the best epoch's.
  assert epochs[-1] == pytest.approx(last, abs=5e-5)
  assert best == pytest.approx(max(epochs), abs=5e-5)
