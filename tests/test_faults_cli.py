"""Each fault produced for real through the train CLI: a disk that fills, a
learning rate that makes the loss NaN, a device that is too small, a step
that hangs. Each ends in one `error:` line and no traceback; complete
checkpoints survive and a rerun resumes where that is possible."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from test_train import ROOT, SMALL

ARGS = [*SMALL, '--config.train.num_steps=25', '--config.train.warmup_steps=5',
        '--config.train.checkpoint_every=5', '--config.train.log_every=5',
        '--config.train.eval_every=1000', '--config.train.eval_batches=1',
        '--config.drift.sentences=0']
# The watchdog test's input: batch 12 of the train split takes 5 minutes.
SLOW_INPUT = '''
import sys, time
from sctd_jax import cli, train
from sctd_jax.data import pipeline
real = pipeline.batches
def slow(config, tokenizer, split='train', position=0, **kw):
  source = real(config, tokenizer, split, position, **kw)
  def delayed():
    for i, batch in enumerate(source):
      if split == 'train' and i == 12:
        time.sleep(300)
      yield batch
  return pipeline.Prefetched(delayed(), 1, source.checkpoint)
pipeline.batches = slow
train.define_flags()
cli.run(train.main, required=['config', 'workdir'])
'''


def _train(workdir, *overrides, env=None, script=None):
  command = ['-c', script] if script else ['-m', 'sctd_jax.train']
  return subprocess.run(
      [sys.executable, *command, '--config', 'configs/tiny.py',
       '--workdir', str(workdir), *ARGS, *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def _one_error_line(run) -> str:
  """The run failed with exactly one `error:` line and no traceback."""
  assert run.returncode == 1, run.stderr[-3000:]
  assert 'Traceback' not in run.stderr and 'Exception ignored' not in run.stderr, (
      run.stderr[-5000:])
  errors = [line for line in run.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, run.stderr[-3000:]
  return errors[0]


def _rows(workdir):
  return [json.loads(line) for line in open(workdir / 'metrics.jsonl')]


def _checkpoints(workdir):
  return sorted(os.listdir(workdir / 'checkpoints'), key=lambda n: (len(n), n))


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  """A tokenizer fitted once and copied into each run's workdir, which saves
  each run the fit (fits are deterministic: no result depends on this)."""
  workdir = tmp_path_factory.mktemp('tokenizer')
  run = _train(workdir, '--config.train.num_steps=1', '--config.train.warmup_steps=0')
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir / 'tokenizer'


def _workdir(path, tokenizer):
  shutil.copytree(tokenizer, path / 'tokenizer')
  return path


def test_full_disk_ends_in_one_line_and_the_rerun_resumes(tmp_path, tokenizer):
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)],
                    capture_output=True).returncode:
    pytest.skip('mounting a tmpfs needs root')
  try:
    workdir = _workdir(disk, tokenizer)
    run = _train(workdir, '--config.train.keep_checkpoints=20')
    assert 'Low disk space' in run.stderr
    error = _one_error_line(run)
    assert error.startswith(f'error: the disk of {workdir}/checkpoints is full: '
                            'a checkpoint needs about '), error
    saved = _checkpoints(workdir)
    assert saved and all(n.isdigit() for n in saved), saved  # No partial save.
    newest = saved[-1]
    assert f'newest complete checkpoint is {workdir}/checkpoints/{newest}.' in error
    assert f'resume from step {newest}.' in error
    # Room for more: the same command resumes from that checkpoint and ends.
    subprocess.run(['mount', '-o', 'remount,size=16m', str(disk)], check=True)
    rerun = _train(workdir, '--config.train.keep_checkpoints=20')
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f'checkpoints/{newest}.' in rerun.stderr  # "Restored checkpoint ..."
    assert [r['step'] for r in _rows(workdir)] == [5, 10, 15, 20, 25]
    assert _checkpoints(workdir) == ['5', '10', '15', '20', '25']
  finally:
    subprocess.run(['umount', '-l', str(disk)], check=True)


def test_nonfinite_loss_stops_in_one_line(tmp_path, tokenizer):
  run = _train(_workdir(tmp_path, tokenizer), '--config.train.learning_rate=1e4')
  error = _one_error_line(run)
  assert re.match(r'error: Non-finite loss (nan|inf) at step \d+\. ', error), error
  assert "train.on_nonfinite='skip'" in error


def test_skip_stops_after_max_skipped_consecutive_steps(tmp_path, tokenizer):
  workdir = _workdir(tmp_path, tokenizer)
  run = _train(workdir, '--config.train.learning_rate=1e4', '--config.train.log_every=1',
               '--config.train.on_nonfinite=skip', '--config.train.max_skipped=3')
  error = _one_error_line(run)
  assert error.startswith('error: 3 consecutive steps (up to step '), error
  rows = _rows(workdir)
  last = int(error.split('up to step ')[1].split(')')[0])
  assert [r['step'] for r in rows] == list(range(1, last + 1))
  assert [r['skipped_steps'] for r in rows[-3:]] == [1, 1, 1]
  assert all(r['loss'] is None for r in rows[-3:])
  assert rows[-4]['skipped_steps'] == 0 and rows[-4]['loss'] is not None


def test_step_that_cannot_fit_the_device_ends_in_one_line(tmp_path, tokenizer):
  workdir = _workdir(tmp_path, tokenizer)
  run = _train(workdir, env={'SCTD_JAX_DEVICE_MEMORY': '100000'})
  error = _one_error_line(run)
  assert error.startswith('error: the train step needs about '), error
  for knob in ('but a device holds 97.7 KB', 'train.grad_accum_steps=2',
               'model.remat=True', 'a smaller train.batch_size (now 8)'):
    assert knob in error, error
  assert not os.path.exists(workdir / 'metrics.jsonl')


def test_hung_step_warns_then_exits_and_the_rerun_resumes(tmp_path, tokenizer):
  workdir = _workdir(tmp_path, tokenizer)
  run = _train(workdir, '--config.train.step_timeout_s=15', script=SLOW_INPUT)
  assert 'Slow step: step 12 (or the input of the next) has taken' in run.stderr, (
      run.stderr[-3000:])
  error = _one_error_line(run)
  assert error.startswith('error: step 12 (or the input of the next) has not '
                          'finished after 1'), error
  assert 'train.step_timeout_s=15' in error and 'resume from checkpoint 10.' in error
  assert _checkpoints(workdir) == ['5', '10']
  # What a save killed half-way leaves; the next start removes it.
  partial = workdir / 'checkpoints' / '15.orbax-checkpoint-tmp-1234'
  shutil.copytree(workdir / 'checkpoints' / '10', partial)
  rerun = _train(workdir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Removed 15.orbax-checkpoint-tmp-1234' in rerun.stderr
  assert [r['step'] for r in _rows(workdir)] == [5, 10, 15, 20, 25]
  assert _checkpoints(workdir) == ['15', '20', '25']  # keep_checkpoints=3
