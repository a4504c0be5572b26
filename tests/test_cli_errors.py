"""A user mistake ends a command with exactly one `error: ...` line naming
what is wrong, exit status 1 and no traceback."""

import json
import subprocess
import sys

import pytest

from sctd_jax import cli
from sctd_jax.evals import finetune
from test_config import THREE_LAYERS
from test_train import ROOT

TRAIN = [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py']


@pytest.mark.parametrize('overrides, message', [
    (['--config.method=fast'],
     "error: config key method='fast' is invalid: use one of "
     "('baseline', 'token_drop', 'sctd')."),
    (['--config.model.num_heads=5'],
     'error: config key model.num_heads=5 is invalid: must divide model.hidden_size=128.'),
    (['--config.data.source=s3://bucket'],
     "error: config key data.source='s3://bucket' is invalid: use 'synthetic', "
     "'hf:NAME[:CONFIG][@SPLIT]' or 'files:GLOB'."),
    (['--config.model.num_layers=3'], f'error: {THREE_LAYERS}'),
])
def test_bad_train_config_is_one_error_line(tmp_path, overrides, message):
  workdir = tmp_path / 'run'
  run = subprocess.run([*TRAIN, '--workdir', str(workdir), *overrides], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 1, run.stderr[-2000:]
  assert 'Traceback' not in run.stderr, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1] == message
  assert not workdir.exists() or not any(workdir.iterdir())   # nothing written


@pytest.mark.parametrize('name, text, why', [
    ('config.json', '{"method": "sctd", "strict": false}\n',
     "could not be loaded (NameError: name 'false' is not defined)"),
    ('notes.py', 'x = 1\n', 'has no get_config()'),
])
def test_a_config_file_that_is_not_one_is_one_error_line(tmp_path, name, text, why):
  path = tmp_path / name
  path.write_text(text)
  run = subprocess.run([*TRAIN[:3], '--config', str(path), '--workdir', str(tmp_path / 'run')],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr[-2000:]
  hint = " (a run's config.json is not one)" if name.endswith('.json') else ''
  assert run.stderr.strip().splitlines()[-1] == (
      f'error: --config={path} {why}; give a Python file whose get_config() returns '
      f'the config, e.g. configs/tiny.py{hint}.')
  assert not (tmp_path / 'run').exists()


KINDS = {cli.PRETRAINING: {'method': 'sctd', 'train': {}, 'model': {}},
         cli.FINETUNING: {'task': 'tense', 'init': 'runs/tiny', 'train': {}},
         cli.HF_MODEL: {'model_type': 'bert', 'vocab_size': 30522}}


def test_an_output_folder_of_another_kind_is_refused(tmp_path):
  """Each command writes its own config.json: into a folder another command
  wrote, it would overwrite that one's."""
  for held, values in KINDS.items():
    folder = tmp_path / held.replace(' ', '_')
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps(values))
    assert cli.folder_kind(folder) == held
    for kind in [*KINDS, cli.TOKENIZER]:   # A tokenizer folder has no config.json.
      if kind == held:
        assert cli.output_dir(str(folder), '--out', kind) == str(folder)
      else:
        with pytest.raises(cli.UserError, match=f'--out={folder} holds a {held} '
                                                f'.*which this {kind} would overwrite'):
          cli.output_dir(str(folder), '--out', kind)
    assert json.loads((folder / 'config.json').read_text()) == values
  assert cli.folder_kind(tmp_path) is None   # no config.json: a new folder


def test_fine_tuning_into_the_pretraining_run_is_refused(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text(json.dumps(KINDS[cli.PRETRAINING]))
  config = finetune.base_config()
  config.update(init=str(run), task='tense')
  with pytest.raises(cli.UserError, match=f'--workdir={run} holds a pretraining run'):
    finetune.finetune(config, str(run))
  with pytest.raises(cli.UserError, match=f'--out={run} holds a pretraining run'):
    finetune.finetune(config, str(run), '--out')   # as evals.suites calls it


def test_suites_write_a_hub_models_results_under_finetune(tmp_path, monkeypatch):
  from sctd_jax.evals import suites
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'runs' / 'tiny').mkdir(parents=True)
  assert suites.default_out('runs/tiny') == 'runs/tiny/finetune'
  assert suites.default_out('google-bert/bert-base-uncased') == (
      'finetune/google-bert--bert-base-uncased')
