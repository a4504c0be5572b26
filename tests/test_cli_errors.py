"""A user mistake ends a command with exactly one `error: ...` line naming
what is wrong, exit status 1 and no traceback."""

import subprocess
import sys

import pytest

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
