"""The launch/ scripts: shellcheck-clean; the SLURM time-limit requeue driven
end to end on CPU by fake srun and scontrol; the local multi-process
launcher's exit status."""

import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from test_train import ROOT, SMALL

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'launch', '*.sh')) +
                 glob.glob(os.path.join(ROOT, 'launch', '*.sbatch')))


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck is not installed: apt-get install shellcheck')
def test_launch_scripts_are_shellcheck_clean():
  run = subprocess.run(['shellcheck', *SCRIPTS], capture_output=True, text=True)
  assert run.returncode == 0, run.stdout


def _fake_slurm(folder):
  """srun runs its command as the one task (signals reach it as srun would
  forward them); scontrol records its arguments."""
  folder.mkdir()
  scripts = {'srun': '#!/usr/bin/env bash\nshift  # --kill-on-bad-exit=1\nexec "$@"\n',
             'scontrol': '#!/usr/bin/env bash\necho "$*" >> "$FAKE_SCONTROL_LOG"\n'}
  for name, text in scripts.items():
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _rows(workdir):
  path = workdir / 'metrics.jsonl'
  return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def _sbatch_until_time_limit(env, workdir, after_step):
  """Runs the batch script; sends it USR1 (SLURM's --signal=B:USR1) once
  metrics.jsonl has a row past `after_step`. Returns (exit status, stderr)."""
  args = [*SMALL, '--config.train.num_steps=100000', '--config.train.log_every=1',
          '--config.train.eval_every=100000', '--config.mesh.fsdp=1',
          '--config.model.dtype=float32', '--config.drift.sentences=0']
  proc = subprocess.Popen(['bash', 'launch/slurm.sbatch', *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 900
  while proc.poll() is None and time.time() < deadline:
    if len(_rows(workdir)) > after_step + 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGUSR1)
  _, err = proc.communicate(timeout=600)
  return proc.returncode, err


def test_slurm_time_limit_saves_requeues_and_the_requeued_job_resumes(tmp_path):
  _fake_slurm(tmp_path / 'bin')
  workdir, log = tmp_path / 'run', tmp_path / 'scontrol.log'
  env = dict(os.environ, PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}',
             SLURM_JOB_ID='4242', SLURM_SUBMIT_DIR=ROOT, VENV=sys.prefix,
             CONFIG='configs/tiny.py', WORKDIR=str(workdir), FAKE_SCONTROL_LOG=str(log))
  status, err = _sbatch_until_time_limit(env, workdir, 0)
  assert status == 0, err[-3000:]
  stopped = max(r['step'] for r in _rows(workdir))
  assert f'Stopped by SIGTERM after step {stopped} of 100000 ' in err
  assert os.listdir(workdir / 'checkpoints') == [str(stopped)]
  assert log.read_text() == 'requeue 4242\n'

  status, err = _sbatch_until_time_limit(env, workdir, stopped)   # the requeued job
  assert status == 0, err[-3000:]
  assert f'resuming at step {stopped}' in err
  steps = [r['step'] for r in _rows(workdir)]
  assert steps == list(range(1, max(steps) + 1)) and max(steps) > stopped
  assert log.read_text() == 'requeue 4242\n' * 2


def test_local_multiprocess_fails_when_a_process_fails(tmp_path):
  run = subprocess.run(
      ['bash', 'launch/local_multiprocess.sh', '--config.train.num_steps=-1'],
      cwd=ROOT, env=dict(os.environ, WORKDIR=str(tmp_path)), capture_output=True,
      text=True, timeout=300)
  assert run.returncode == 1, run.stderr[-2000:]
  assert run.stderr.count('train.num_steps=-1 is invalid') == 2
  assert 'exited with status 1' in run.stderr
