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


@pytest.mark.parametrize('pin', ['0', '1'])
def test_experiment_script_fails_when_a_training_run_fails(tmp_path, pin):
  # Stand-ins on PATH: every `python` command succeeds but token_drop's
  # training, and each call is recorded; `taskset -c CORE CMD...` records
  # CORE and runs CMD.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fake = bin_dir / 'python'
  fake.write_text('#!/usr/bin/env bash\n'
                  f'echo "$*" >> {tmp_path}/calls\n'
                  'case "$*" in *--config.method=token_drop*) exit 3;; esac\n')
  fake.chmod(0o755)
  taskset = bin_dir / 'taskset'
  taskset.write_text('#!/usr/bin/env bash\n'
                     f'echo "$2" >> {tmp_path}/cores\n'
                     'shift 2; exec "$@"\n')
  taskset.chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
             SEEDS='0 1', VARIANTS='baseline token_drop sctd', JOBS='2', PIN=pin,
             TRAIN_ARGS='--config.train.num_steps=7 --config.train.eval_every=7')
  run = subprocess.run(['bash', os.path.join(ROOT, 'docs', 'results', 'run.sh'),
                        str(tmp_path / 'runs')], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
  assert run.returncode != 0
  for seed in (0, 1):
    assert (f'error: seed {seed} token_drop failed; see {tmp_path}/runs/seed{seed}/'
            'token_drop.log') in run.stderr, run.stderr
  calls = (tmp_path / 'calls').read_text().splitlines()
  assert sum('sctd_jax.train' in c for c in calls) == 6
  # TRAIN_ARGS reach every pretraining run, and only those.
  assert all(c.endswith('--config.train.num_steps=7 --config.train.eval_every=7')
             == ('sctd_jax.train' in c) for c in calls)
  # The failed runs are not evaluated, the others are; nothing is compared.
  evaluated = {c.split('--init ')[1].split()[0] for c in calls if 'evals.probe' in c}
  assert evaluated == {f'{tmp_path}/runs/seed{s}/{v}' for s in (0, 1)
                       for v in ('baseline', 'sctd')}
  assert not any('evals.seeds' in c for c in calls)
  # Pinned, every command ran on one of the JOBS slots' cores.
  cores = (tmp_path / 'cores').read_text().split() if pin == '1' else []
  assert (set(cores) == {'0', '1'}) == (pin == '1'), cores
