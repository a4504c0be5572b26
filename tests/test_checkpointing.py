"""Checkpoints with real processes: preemption by SIGTERM, exact resume (with
gradient clipping on), fallback from a damaged checkpoint, refusal of
another model shape."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_train import ROOT, SMALL

STEPS = 100
EVERY = 25   # checkpoint_every; keep_checkpoints=3 keeps the last three
KEPT = [str(STEPS - 2 * EVERY), str(STEPS - EVERY), str(STEPS)]
CLIP = 0.5
ARGS = [*SMALL, f'--config.train.num_steps={STEPS}', '--config.train.log_every=1',
        f'--config.train.checkpoint_every={EVERY}', '--config.train.keep_checkpoints=3',
        '--config.train.eval_every=1000', '--config.train.warmup_steps=10',
        '--config.sctd.fi=4', '--config.model.dropout_rate=0.1',  # RNG must resume too
        # Clipping adds a state to the optimizer chain, so the restored tree
        # differs from an unclipped run's; gradient norms here exceed it.
        f'--config.train.grad_clip_norm={CLIP}']


def _command(workdir, *extra):
  return [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
          '--workdir', str(workdir), *ARGS, *extra]


def _run(workdir, *extra):
  return subprocess.run(_command(workdir, *extra), cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


def _rows(workdir):
  return {r['step']: r for r in map(json.loads, open(os.path.join(workdir, 'metrics.jsonl')))}


def _same_training(a, b, steps):
  for s in steps:
    for key in ('loss', 'mlm_drop', 'mlm_full', 'kl_global', 'kl_local', 'grad_norm',
                'learning_rate', 'sctd_step'):
      if b[s][key] is None:
        assert a[s][key] is None, (s, key)
      else:
        assert a[s][key] == pytest.approx(b[s][key], rel=1e-6, abs=1e-7), (s, key, a[s], b[s])


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run."""
  workdir = tmp_path_factory.mktemp('reference')
  run = _run(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir


def test_sigterm_saves_and_rerun_resumes_exactly(reference, tmp_path):
  # The run fits its own tokenizer (fits are deterministic), so equal
  # training below also means an equal fit.
  proc = subprocess.Popen(_command(tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  stopped = max(_rows(tmp_path))
  assert 3 <= stopped < STEPS, 'the signal should land mid-run'
  assert f'Stopped by SIGTERM after step {stopped}' in stderr
  assert (tmp_path / 'checkpoints' / str(stopped)).is_dir()

  run = _run(tmp_path)   # the same command
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'resuming at step {stopped}' in run.stderr
  assert 'differs from the one' not in run.stderr
  rows, ref = _rows(tmp_path), _rows(reference)
  assert sorted(rows) == list(range(1, STEPS + 1))
  _same_training(rows, ref, range(1, STEPS + 1))
  # The clipped run resumed equals the unbroken clipped run, and clipping
  # was at work on both sides of the break.
  clipped = [s for s in rows if rows[s]['grad_norm'] > CLIP]
  assert min(clipped) <= stopped < max(clipped) and len(clipped) > STEPS // 2, clipped


def test_damaged_newest_checkpoint_falls_back_to_previous(reference, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int) == KEPT
  for path in glob.glob(str(workdir / 'checkpoints' / str(STEPS) / 'state' / '**' / '*'),
                        recursive=True):
    if os.path.isfile(path):
      open(path, 'wb').close()   # as if killed while writing
  # The copy already holds the rows after the previous checkpoint: mark
  # them, so only rows the resumed run writes (after dropping the marked
  # ones) can pass.
  metrics = workdir / 'metrics.jsonl'
  rows = [json.loads(line) for line in open(metrics)]
  metrics.write_text(''.join(json.dumps(dict(r, loss=-1.0) if r['step'] > STEPS - EVERY else r) + '\n'
                             for r in rows))
  # A key that does not change training: the resumed run says it changed.
  run = _run(workdir, '--config.train.eval_every=999')
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'unreadable' in run.stderr and f'resuming at step {STEPS - EVERY}' in run.stderr
  assert ('config that differs from the one in its config.json (rewritten now): '
          'train.eval_every: 1000 -> 999. To train another variant') in run.stderr
  rows = [json.loads(line) for line in open(metrics)]
  assert [r['step'] for r in rows] == list(range(1, STEPS + 1))
  assert all(r['loss'] > 0 for r in rows)
  kept = os.listdir(workdir / 'checkpoints')
  assert any(name.startswith(f'{STEPS}.unreadable-') for name in kept), kept
  assert set(KEPT[1:]) <= set(kept)   # the good one kept, the newest saved anew
  _same_training(_rows(workdir), _rows(reference), range(STEPS - EVERY + 1, STEPS + 1))


def test_checkpoint_of_another_shape_is_refused_and_nothing_is_overwritten(reference, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  before = (workdir / 'config.json').read_text()
  run = _run(workdir, '--config.model.hidden_size=64', '--config.model.intermediate_size=128')
  assert run.returncode != 0
  assert 'hidden_size: checkpoint 32 vs config 64' in run.stderr, run.stderr[-2000:]
  assert 'intermediate_size' in run.stderr
  assert (workdir / 'config.json').read_text() == before
  assert sorted(os.listdir(workdir / 'checkpoints'), key=int) == KEPT


def test_a_resumed_run_keeps_the_dropout_masks_it_began_with(reference, tmp_path):
  """A new run records the masks 'auto' chose; a run from before the key
  (threefry2x32) resumes with threefry2x32 masks, not today's default, and
  an explicit other choice is refused with nothing overwritten."""
  config = json.loads((reference / 'config.json').read_text())
  assert config['train']['dropout_prng'] == 'philox4x32'   # 'auto' on CPU.
  workdir = tmp_path / 'run'
  shutil.copytree(reference, workdir)
  shutil.rmtree(workdir / 'checkpoints' / str(STEPS))
  del config['train']['dropout_prng']                     # As written before the key.
  (workdir / 'config.json').write_text(json.dumps(config))
  before = (workdir / 'config.json').read_text()
  run = _run(workdir, '--config.train.dropout_prng=philox4x32')
  assert run.returncode == 1
  assert 'train.dropout_prng' in run.stderr and 'threefry2x32' in run.stderr
  assert 'Traceback' not in run.stderr
  assert (workdir / 'config.json').read_text() == before
  # One step is enough: its gradient is that of the params of the previous
  # checkpoint under the step's dropout masks (num_steps changes only later
  # learning rates).
  first = STEPS - EVERY + 1
  run = _run(workdir, f'--config.train.num_steps={first}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert json.loads((workdir / 'config.json').read_text())['train']['dropout_prng'] == 'threefry2x32'
  # Dropout is on, so other masks give another gradient at the first resumed
  # step (the loss of a model this young barely moves: its outputs are
  # close to the unigram distribution whatever the hidden states).
  assert (_rows(workdir)[first]['grad_norm'] !=
          pytest.approx(_rows(reference)[first]['grad_norm'], rel=1e-4))


@pytest.mark.parametrize('keep_every, kept', [(0, [11, 12]), (4, [4, 8, 11, 12])])
def test_keep_every_keeps_those_steps_besides_the_newest(tmp_path, keep_every, kept):
  import jax.numpy as jnp
  from sctd_jax import checkpointing
  checkpointer = checkpointing.Checkpointer(str(tmp_path), 2, keep_every)
  for step in range(1, 13):
    checkpointer.save(step, {'w': jnp.full((3,), step)}, {'position': step}, {})
  checkpointer.wait()
  assert checkpointer.steps() == kept
  state, data = checkpointer.restore({'w': jnp.zeros((3,))}, {}, step=4 if keep_every else 11)
  assert data['position'] == int(state['w'][0]) == (4 if keep_every else 11)
  checkpointer.close()
  assert sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == kept
