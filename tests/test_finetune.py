"""Fine-tuning end to end from a real (tiny) pretraining workdir: a built-in
task learned well above chance over two seeds, a regression task from local
files through the CLI, the files written, and config errors by key."""

import importlib.util
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from sctd_jax.config import ConfigError
from sctd_jax.data import synthetic
from sctd_jax.evals import finetune
from sctd_jax.evals import tasks
from sctd_jax import load_pretrained
from sctd_jax import models
from test_train import ROOT, SMALL



def _get_config():
  """configs/finetune.py's get_config(), as the CLI reads it."""
  spec = importlib.util.spec_from_file_location(
      'finetune_config', os.path.join(ROOT, 'configs', 'finetune.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _cli(module, *args):
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A one-step pretraining workdir (the smallest step to compile): its
  encoder is close to random, so what is learned below is fine-tuning's."""
  workdir = tmp_path_factory.mktemp('pretrained')
  result = _cli('sctd_jax.train', '--config', 'configs/tiny.py', '--workdir', workdir,
                *SMALL, '--config.method=baseline', '--config.train.num_steps=1',
                '--config.train.warmup_steps=0', '--config.train.checkpoint_every=1')
  assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir)


def _config(init_path, **overrides):
  c = _get_config()
  c.init = init_path
  c.data.max_length = 32
  for key, value in overrides.items():
    section, _, name = key.rpartition('.')
    (c[section] if section else c)[name] = value
  return c


def test_tense_is_learned_over_two_seeds_and_the_files_agree(pretrained, tmp_path):
  # Chance and the majority class are both 1/3.
  results = finetune.finetune(_config(
      pretrained, task='tense', num_seeds=2, **{'train.num_steps': 80,
                                                'train.learning_rate': 2e-3}), tmp_path)
  assert set(results) == {'task', 'init', 'num_seeds', 'accuracy', 'std', 'per_seed'}
  assert (results['task'], results['init'], results['num_seeds']) == ('tense', pretrained, 2)
  per_seed = results['per_seed']['accuracy']
  # Two seeds may tie on accuracy (a model that has learned the same classes
  # scores the same on this dev set), so only the count is checked here.
  assert len(per_seed) == 2
  assert results['accuracy'] == pytest.approx((per_seed[0] + per_seed[1]) / 2)
  # The population std of two values is half their distance.
  assert results['std'] == {'accuracy': pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)}
  assert results['accuracy'] > 0.6, results
  assert json.load(open(tmp_path / 'eval_results.json')) == results

  rows = [json.loads(line) for line in open(tmp_path / 'predictions.jsonl')]
  sentences = synthetic.labelled_sentences(tasks.BUILTIN_SEEDS['validation'], 500)
  assert [r['index'] for r in rows] == list(range(500))
  assert {r['split'] for r in rows} == {'validation'}
  assert [r['label'] for r in rows] == [synthetic.TENSES.index(s.tense) for s in sentences]
  assert all(isinstance(r['prediction'], int) for r in rows)
  predictions = [r['prediction'] for r in rows]
  labels = [r['label'] for r in rows]
  assert sum(p == l for p, l in zip(predictions, labels)) / 500 == pytest.approx(per_seed[0])

  config = json.load(open(tmp_path / 'config.json'))
  assert config['task'] == 'tense' and config['num_seeds'] == 2
  assert config['train']['num_steps'] == 80 and config['train']['warmup_steps'] == 5
  assert config['train']['batch_size'] == tasks.get('tense').batch_size


def test_each_seed_starts_from_the_pretrained_encoder_with_its_own_head(pretrained):
  mlm, params, _ = load_pretrained(pretrained)
  model = models.BertForSequenceClassification(mlm.cfg, 3)
  bert = jax.device_get(params['bert'])
  first, second = (finetune.init_params(model, bert, jax.random.PRNGKey(seed))
                   for seed in (0, 1))
  jax.tree.map(np.testing.assert_array_equal, first['bert'], bert)
  assert first['classifier']['kernel'].shape == (mlm.cfg.hidden_size, 3)
  assert not np.array_equal(first['classifier']['kernel'], second['classifier']['kernel'])


def _stsb_files(tmp_path):
  """STS-B-like pairs: paraphrases score 4-5, changed meanings 0-2."""
  rng = np.random.default_rng(0)
  files = []
  for name, seed, count in (('train.csv', 7, 64), ('dev.tsv', 8, 40)):
    sep = '\t' if name.endswith('.tsv') else ','
    lines = [sep.join(('sentence1', 'sentence2', 'label'))]
    for a, b, same in synthetic.paraphrase_pairs(seed, count):
      score = round(float(rng.uniform(4, 5) if same else rng.uniform(0, 2)), 2)
      lines.append(sep.join((a, b, str(score))))
    (tmp_path / name).write_text('\n'.join(lines) + '\n')
    files.append(str(tmp_path / name))
  return files


def test_regression_from_local_files_through_the_cli(pretrained, tmp_path):
  train, validation = _stsb_files(tmp_path)
  out = tmp_path / 'out'
  result = _cli('sctd_jax.evals.finetune', '--config', 'configs/finetune.py', '--workdir', out,
                f'--config.init={pretrained}', '--config.task=stsb',
                '--config.data.max_length=32', '--config.train.num_steps=6',
                '--config.train.learning_rate=1e-3', '--config.train.eval_batch_size=16',
                f'--config.data.train_file={train}',
                f'--config.data.validation_file={validation}')
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.load(open(out / 'eval_results.json'))
  assert {'pearson', 'spearman'} <= set(results) and results['num_seeds'] == 1
  assert all(-1 <= results[k] <= 1 and results[k] != 0 for k in ('pearson', 'spearman'))
  assert results['std'] == {'pearson': 0.0, 'spearman': 0.0}
  rows = [json.loads(line) for line in open(out / 'predictions.jsonl')]
  assert len(rows) == 40 and all(isinstance(r['prediction'], float) for r in rows)
  predictions, labels = ([r[k] for r in rows] for k in ('prediction', 'label'))
  assert results['pearson'] == pytest.approx(scipy.stats.pearsonr(predictions, labels)[0],
                                             abs=1e-6)
  assert results['spearman'] == pytest.approx(scipy.stats.spearmanr(predictions, labels)[0],
                                              abs=1e-6)
  assert 'stsb seed 0: pearson' in result.stderr
  # Not a terminal: progress as log lines, no bar redrawn with carriage returns.
  assert 'stsb seed 0: step 6/6 loss' in result.stderr and '\r' not in result.stderr


def test_progress_in_a_log_file_is_a_line_per_log_every_with_the_mean_loss(caplog):
  """Under pytest stderr is no terminal, as in a scheduler's log file: no
  redrawn bar, but a log line with the mean loss of the last log_every steps."""
  t = ml_collections.ConfigDict({'num_steps': 5, 'log_every': 2})
  count_and_echo = lambda state, batch, key: (state + 1, jnp.float32(batch))
  with caplog.at_level(logging.INFO):
    state = finetune.train(count_and_echo, 0, iter([1., 2., 3., 4., 5.]), None, t,
                           'tense seed 0')
  assert state == 5
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('tense')]
  assert [line.split('  ETA ')[0] for line in lines] == [
      'tense seed 0: step 2/5 loss 1.5000', 'tense seed 0: step 4/5 loss 3.5000',
      'tense seed 0: step 5/5 loss 5.0000'], lines
  assert lines[-1].endswith('ETA 0:00:00')
  assert '\r' not in caplog.text


# The layout of the Hub repository nyu-mll/glue, cut to MNLI: the README's
# configs map each split to its Parquet files.
def _glue_readme(splits):
  return ''.join(['---\nconfigs:\n- config_name: mnli\n  data_files:\n',
                  *(f'  - split: {s}\n    path: mnli/{s}-*\n' for s in splits), '---\n'])


MNLI_SPLITS = {'train': (7, 48), 'validation_matched': (8, 20),
               'validation_mismatched': (9, 28)}


def _glue_copy(folder, splits=MNLI_SPLITS):
  """A local copy of nyu-mll/glue's mnli config: paraphrase pairs labelled
  entailment (0), others contradiction (2), and a few neutral (1)."""
  import datasets
  (folder / 'mnli').mkdir(parents=True)
  (folder / 'README.md').write_text(_glue_readme(splits))
  labels = {}
  for split, (seed, count) in splits.items():
    pairs = synthetic.paraphrase_pairs(seed, count)
    labels[split] = [0 if same else (1 if i % 5 == 0 else 2)
                     for i, (_, _, same) in enumerate(pairs)]
    datasets.Dataset.from_dict(dict(
        premise=[a for a, _, _ in pairs], hypothesis=[b for _, b, _ in pairs],
        label=labels[split], idx=list(range(count)))).to_parquet(
            str(folder / 'mnli' / f'{split}-00000-of-00001.parquet'))
  return labels


def test_mnli_reports_both_validation_splits_through_the_cli(pretrained, tmp_path):
  labels = _glue_copy(tmp_path / 'glue')
  out = tmp_path / 'out'
  result = _cli('sctd_jax.evals.finetune', '--config', 'configs/finetune.py', '--workdir', out,
                f'--config.init={pretrained}', '--config.task=mnli',
                f'--config.data.dataset={tmp_path / "glue"}',
                '--config.data.max_length=32', '--config.train.num_steps=4',
                '--config.train.batch_size=8', '--config.train.eval_batch_size=16')
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.load(open(out / 'eval_results.json'))
  rows = [json.loads(line) for line in open(out / 'predictions.jsonl')]
  for split, suffix in (('validation_matched', '_m'), ('validation_mismatched', '_mm')):
    mine = [r for r in rows if r['split'] == split]
    assert [r['label'] for r in mine] == labels[split]   # every example, in order
    accuracy = np.mean([r['prediction'] == r['label'] for r in mine])
    assert results[f'accuracy{suffix}'] == pytest.approx(accuracy, abs=1e-9), split
  assert len(rows) == 20 + 28


def test_a_local_hub_copy_without_a_split_is_refused_by_key(tmp_path):
  _glue_copy(tmp_path / 'glue', {k: v for k, v in MNLI_SPLITS.items()
                                 if k != 'validation_mismatched'})
  with pytest.raises(ConfigError) as error:
    tasks.load(tasks.get('mnli'), dataset=str(tmp_path / 'glue'))
  assert str(error.value) == (
      f"config key data.dataset='{tmp_path / 'glue'}' has no split "
      'validation_mismatched (it has train, validation_matched); mnli needs '
      'train, validation_matched, validation_mismatched.')


def test_cli_refuses_a_bad_task_by_key(pretrained, tmp_path):
  result = _cli('sctd_jax.evals.finetune', '--config', 'configs/finetune.py', '--workdir',
                tmp_path, f'--config.init={pretrained}', '--config.task=qnli')
  assert result.returncode != 0
  assert "config key task='qnli' is invalid" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize('override, named', [
    ({'init': ''}, 'config key init='),
    ({'num_seeds': 0}, 'num_seeds=0'),
    ({'train.learning_rate': 0.0}, 'train.learning_rate=0.0'),
    ({'train.num_epochs': 2, 'train.num_steps': 10}, 'train.num_epochs=2'),
    ({'train.warmup_ratio': 1.0}, 'train.warmup_ratio=1.0'),
    ({'data.max_length': 2}, 'data.max_length=2'),
    ({'data.max_length': 4096}, 'data.max_length=4096 is invalid: the model at'),
    ({'data.max_train_examples': 0}, 'data.max_train_examples=0'),
])
def test_bad_config_values_are_refused_by_key(pretrained, tmp_path, override, named):
  with pytest.raises(ConfigError) as error:
    finetune.finetune(_config(pretrained, **override), tmp_path)
  assert named in str(error.value)
  assert not os.listdir(tmp_path)
