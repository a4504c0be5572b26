"""Two processes joined by jax.distributed (gloo CPU collectives) train like
one process holding both devices: the same metrics at every step, and the
same final parameters, read back by one process (as export reads them)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from sctd_jax.hf import load as hf_load

from test_train import ROOT, SMALL

# lr 1e-5: see tests/mesh_check.py on comparing Adam runs across layouts.
ARGS = [*SMALL, '--config.train.num_steps=6', '--config.train.log_every=1',
        '--config.train.learning_rate=1e-5', '--config.train.warmup_steps=0',
        '--config.train.eval_every=6', '--config.sctd.fi=2']


def _command(workdir):
  return [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
          '--workdir', str(workdir), *ARGS]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train_two_processes(workdir, attempts=3):
  """Starts both processes on a free port; another process may take the port
  between our probe and the coordinator's bind, so a bind failure retries."""
  for _ in range(attempts):
    port = _free_port()
    procs = [subprocess.Popen(
        _command(workdir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                            JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    try:
      outputs = [p.communicate(timeout=1200) for p in procs]   # a loaded 2-core machine
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
    if not any('address already in use' in err.lower() for _, err in outputs):
      return procs, outputs
  return procs, outputs


def _rows(workdir):
  return [json.loads(line) for line in open(workdir / 'metrics.jsonl')]


def test_two_processes_train_like_one(tmp_path):
  single, multi = tmp_path / 'single', tmp_path / 'multi'
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') +
             ' --xla_force_host_platform_device_count=2')
  run = subprocess.run(_command(single), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1200)
  assert run.returncode == 0, run.stderr[-3000:]

  procs, outputs = _train_two_processes(multi)
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'Process 1 of 2' in outputs[1][1]
  # Each run fitted its own (process 0's, shared with process 1): fits are
  # deterministic, so the vocabularies are the same without copying one.
  assert ((multi / 'tokenizer' / 'tokenizer.json').read_bytes()
          == (single / 'tokenizer' / 'tokenizer.json').read_bytes())

  a, b = _rows(single), _rows(multi)   # only process 0 writes metrics
  assert [r['step'] for r in b] == list(range(1, 7))
  for key in ('loss', 'mlm_drop', 'grad_norm', 'val_mlm_full'):
    got = [r.get(key) for r in b if r.get(key) is not None]
    want = [r.get(key) for r in a if r.get(key) is not None]
    assert want, f'{key} is missing from both runs'   # not a vacuous pass
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
  assert sorted(os.listdir(multi / 'checkpoints')) == ['6']
  # One process reads the two-process checkpoint, and leaves it in place.
  want = hf_load.load_workdir(str(single)).params
  got = hf_load.load_workdir(str(multi)).params
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               got, want)
  assert sorted(os.listdir(multi / 'checkpoints')) == ['6']
