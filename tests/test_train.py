"""The CLI end to end: a short tiny run, its workdir, and bad configs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--config.model.hidden_size=32', '--config.model.num_heads=2',
         '--config.model.intermediate_size=64', '--config.data.seq_len=32',
         '--config.data.max_predictions=5', '--config.data.vocab_size=400',
         '--config.data.tokenizer_docs=300', '--config.train.batch_size=8']


def _train(workdir, *overrides):
  return subprocess.run(
      [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
       '--workdir', str(workdir), *SMALL, *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_sctd_run_writes_the_workdir_and_learns(tmp_path):
  run = _train(tmp_path, '--config.train.num_steps=60', '--config.train.log_every=1',
               '--config.train.eval_every=30', '--config.sctd.fi=5',
               '--config.train.warmup_steps=5', '--config.train.learning_rate=5e-3')
  assert run.returncode == 0, run.stderr[-3000:]
  config = json.load(open(tmp_path / 'config.json'))
  tokenizer = json.load(open(tmp_path / 'tokenizer' / 'tokenizer.json'))
  assert config['model']['vocab_size'] == len(tokenizer['model']['vocab'])
  assert config['method'] == 'sctd' and config['sctd']['fi'] == 5
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == list(range(1, 61))
  for r in rows:
    for key in ('step', 'loss', 'mlm_drop', 'mlm_full', 'kl_global', 'kl_local',
                'sctd_step', 'learning_rate', 'step_time_s', 'tokens_per_s'):
      assert key in r, key
    sctd = (r['step'] - 1) % 5 == 0   # the step that ran had state.step % fi == 0
    assert r['sctd_step'] == int(sctd)
    assert (r['kl_global'] is not None) == sctd and (r['mlm_full'] is not None) == sctd
    assert r['mlm_drop'] is not None and r['step_time_s'] > 0
    assert 0 < r['mfu'] < 1 and r['model_flops_per_s'] > 0
  # An SCTD step counts both forwards: more than twice a dropped step's FLOPs.
  flops = lambda r: r['model_flops_per_s'] * r['step_time_s']
  assert flops(rows[5]) > 2 * flops(rows[6]), (rows[5], rows[6])
  evals = [r for r in rows if 'val_mlm_full' in r]
  assert [r['step'] for r in evals] == [30, 60]
  for key in ('val_mlm_full', 'val_mlm_drop'):
    assert evals[1][key] < evals[0][key] < rows[0]['loss'] - 0.5, (rows[0], evals)
  for r in evals:  # Semantic drift (Figure 3): masking, then dropping, moves it.
    assert 0 < r['drift_dropped'] < 1 and 0 < r['drift_masked'] < 1, r
  assert not any('drift_masked' in r for r in rows if r not in evals)
  assert os.listdir(tmp_path / 'tensorboard')
  assert 'step' in run.stderr and 'tokens/s' in run.stderr


@pytest.mark.parametrize('override, named', [
    ('--config.method=tokendrop', 'method'),
    ('--config.token_drop.keep_rate=0', 'token_drop.keep_rate'),
    ('--config.sctd.kl_normalizer=tokens', 'sctd.kl_normalizer'),
    ('--config.train.no_such_key=1', 'no_such_key'),
    ('--config.model.num_heads=5', 'model.num_heads'),
])
def test_bad_config_exits_nonzero_naming_the_key(tmp_path, override, named):
  run = _train(tmp_path / 'run', override)
  assert run.returncode != 0
  assert named in run.stderr, run.stderr[-2000:]
  assert not (tmp_path / 'run' / 'metrics.jsonl').exists()
