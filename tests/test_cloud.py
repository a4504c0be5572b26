"""A gs:// workdir against a GCS emulator on 127.0.0.1 (gcp-storage-emulator):
config, tokenizer, metrics, TensorBoard and Orbax checkpoints land in the
bucket; a rerun resumes from it and export reads from it."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from test_train import ROOT, SMALL

storage = pytest.importorskip('google.cloud.storage')
pytest.importorskip('gcsfs')
pytest.importorskip('gcp_storage_emulator')

BUCKET = 'sctd-test'
ARGS = [*SMALL, '--config.train.num_steps=6', '--config.train.warmup_steps=2',
        '--config.train.log_every=1',
        '--config.train.checkpoint_every=3', '--config.train.eval_every=1000',
        '--config.sctd.fi=2', '--config.drift.sentences=0']


@pytest.fixture(scope='module')
def emulator():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'tests', 'gcs_emulator.py'), str(port), BUCKET],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while time.time() < deadline:
    try:
      socket.create_connection(('127.0.0.1', port), timeout=1).close()
      break
    except OSError:
      time.sleep(0.2)
  url = f'http://127.0.0.1:{port}'
  env = dict(os.environ,
             STORAGE_EMULATOR_HOST=url,      # google-cloud-storage, gcsfs
             TENSORSTORE_GCS_HTTP_URL=url,   # Orbax's arrays
             GOOGLE_AUTH_TOKEN_FOR_TESTING='none',   # TensorStore: no credentials
             GOOGLE_CLOUD_PROJECT='test')
  old = dict(os.environ)
  os.environ.update(env)   # for the storage client in this process
  try:
    yield env
  finally:
    os.environ.clear()
    os.environ.update(old)
    proc.terminate()
    proc.wait(timeout=30)


def _run(env, *args, module='sctd_jax.train'):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)


def _train(env, workdir):
  return _run(env, '--config', 'configs/tiny.py', '--workdir', workdir, *ARGS)


def _objects(prefix):
  client = storage.Client()
  return {b.name[len(prefix):]: b for b in client.list_blobs(BUCKET, prefix=prefix)}


def _rows(blob):
  return [json.loads(line) for line in blob.download_as_text().splitlines()]


def test_gs_workdir_trains_resumes_and_exports(emulator, tmp_path):
  workdir = f'gs://{BUCKET}/run'
  run = _train(emulator, workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert not os.path.exists(os.path.join(ROOT, 'gs:'))   # not a local folder
  objects = _objects('run/')
  assert json.loads(objects['config.json'].download_as_text())['train']['num_steps'] == 6
  assert 'tokenizer/tokenizer.json' in objects
  assert any(name.startswith('tensorboard/events.out.tfevents') for name in objects)
  assert {name.split('/')[1] for name in objects if name.startswith('checkpoints/')} >= {'3', '6'}
  first = _rows(objects['metrics.jsonl'])
  assert [r['step'] for r in first] == list(range(1, 7))

  for name, blob in objects.items():   # as if stopped after step 3
    if name.startswith('checkpoints/6/'):
      blob.delete()
  run = _train(emulator, workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'resuming at step 3' in run.stderr
  again = _rows(_objects('run/')['metrics.jsonl'])
  assert [r['step'] for r in again] == list(range(1, 7))
  for a, b in zip(first[3:], again[3:]):
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-6)

  out = tmp_path / 'hf'
  run = _run(emulator, '--workdir', workdir, '--out', str(out), module='sctd_jax.export')
  assert run.returncode == 0, run.stderr[-3000:]
  assert json.load(open(out / 'config.json'))['hidden_size'] == 32
  assert (out / 'model.safetensors').stat().st_size > 0
  assert (out / 'tokenizer.json').exists()
