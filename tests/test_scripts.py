"""The shell scripts parse, and docs/results/run.sh stops when one of its
background runs fails (a bare `wait` would have carried on and exited 0)."""

import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'launch', '*.sh')) +
                 glob.glob(os.path.join(ROOT, 'launch', '*.sbatch')) +
                 [os.path.join(ROOT, 'docs', 'results', 'run.sh')])


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_parses(script):
  run = subprocess.run(['bash', '-n', script], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr


def test_experiment_script_fails_when_a_training_run_fails(tmp_path):
  # A stand-in `python` on PATH: every command succeeds but token_drop's
  # training, and each call is recorded.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'python'
  fake.write_text('#!/usr/bin/env bash\n'
                  f'echo "$*" >> {tmp_path}/calls\n'
                  'case "$*" in *--config.method=token_drop*) exit 3;; esac\n')
  fake.chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  run = subprocess.run(['bash', os.path.join(ROOT, 'docs', 'results', 'run.sh'),
                        str(tmp_path / 'runs')], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
  assert run.returncode != 0
  assert f'error: a job failed; see {tmp_path}/runs/token_drop.log' in run.stderr
  calls = (tmp_path / 'calls').read_text()
  assert calls.count('sctd_jax.train') == 3
  assert 'sctd_jax.evals' not in calls  # Stopped before evaluating.
