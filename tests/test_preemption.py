"""Preemption across processes: two jax.distributed CPU processes on
127.0.0.1; a SIGTERM to one of them stops both after the same step with one
checkpoint, which resumes on one process; a SIGKILLed process makes the other
exit non-zero within a bounded time."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from test_train import ROOT, SMALL

STEPS = 60
# lr 1e-5: see tests/mesh_check.py on comparing Adam runs across layouts.
ARGS = [*SMALL, f'--config.train.num_steps={STEPS}', '--config.train.log_every=1',
        '--config.train.learning_rate=1e-5', '--config.train.warmup_steps=0',
        '--config.train.eval_every=1000', '--config.train.checkpoint_every=1000',
        '--config.sctd.fi=2', '--config.mesh.heartbeat_timeout_s=10']


def command(workdir, *extra):
  return [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
          '--workdir', str(workdir), *ARGS, *extra]


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(workdir, *extra, count=2):
  port = free_port()
  return [subprocess.Popen(
      command(workdir, *extra), cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(i)))
          for i in range(count)]


def one_process(workdir, devices=2, *extra):
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             f' --xla_force_host_platform_device_count={devices}')
  return subprocess.run(command(workdir, *extra), cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def rows(workdir):
  return {r['step']: r for r in map(json.loads, open(workdir / 'metrics.jsonl'))}


def wait_for_rows(workdir, procs, count, timeout=900):
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
      return
    time.sleep(0.02)
  for p in procs:
    p.kill()
  raise AssertionError(f'no {count} metrics rows: ' +
                       ''.join(p.communicate()[1][-2000:] for p in procs))


def assert_same_losses(got, want, steps):
  for key in ('loss', 'mlm_drop', 'grad_norm'):
    np.testing.assert_allclose([got[s][key] for s in steps],
                               [want[s][key] for s in steps], rtol=1e-5, err_msg=key)


def test_sigterm_to_one_process_stops_both_after_the_same_step(tmp_path):
  reference, run = tmp_path / 'reference', tmp_path / 'run'
  done = one_process(reference)   # one process holding both devices
  assert done.returncode == 0, done.stderr[-3000:]

  procs = start_processes(run)
  wait_for_rows(run, procs, 3)
  procs[1].send_signal(signal.SIGTERM)   # the notice reaches one host only
  outputs = [p.communicate(timeout=300)[1] for p in procs]
  for p, err in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  # The two-process run fitted its own tokenizer: the same vocabulary, as fits
  # are deterministic.
  assert ((run / 'tokenizer' / 'tokenizer.json').read_bytes()
          == (reference / 'tokenizer' / 'tokenizer.json').read_bytes())
  stopped = max(rows(run))
  assert 3 <= stopped < STEPS, 'the signal should land mid-run'
  assert f'Stopped by SIGTERM after step {stopped} of {STEPS} ' in outputs[1]
  assert f'Stopped by a signal to another process after step {stopped} of {STEPS} ' in outputs[0]
  assert os.listdir(run / 'checkpoints') == [str(stopped)]

  resumed = one_process(run)   # 2 processes -> 1
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'resuming at step {stopped}' in resumed.stderr
  got, want = rows(run), rows(reference)
  assert sorted(got) == list(range(1, STEPS + 1))
  assert_same_losses(got, want, range(1, STEPS + 1))


def test_a_killed_process_makes_the_other_exit_nonzero(tmp_path):
  # Many steps: the kill must land mid-run on a fast machine too.
  procs = start_processes(tmp_path, f'--config.train.num_steps={100 * STEPS}')
  wait_for_rows(tmp_path, procs, 3)
  procs[1].kill()
  killed = time.time()
  _, err = procs[0].communicate(timeout=180)
  assert procs[0].returncode == 1, err[-3000:]
  # gloo reports the reset connection at once, and the 10 s heartbeat timeout
  # would end a process blocked elsewhere; the rest is a loaded machine.
  assert time.time() - killed < 60
  assert 'error: process 0 of 2 stops: a computation across processes failed' in err
  assert 'Another process probably died' in err
  assert 'Check failure stack trace' not in err
