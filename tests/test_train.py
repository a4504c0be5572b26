"""The CLI end to end: a short tiny run, its workdir, and bad configs."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from sctd_jax import metrics_log

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
  # Not a terminal: plain log lines, no progress bar repeating them.
  assert 'step 60/60 loss' in run.stderr and 'step/s' not in run.stderr
  # The end-of-run summary, its figures recomputed from metrics.jsonl.
  summary = run.stderr[run.stderr.index('Finished 60 of 60 steps'):]
  entropy = re.search(r'Unigram entropy of the validation tokens: (\S+) nats',
                      run.stderr).group(1)
  assert (f'At step 60: validation MLM loss: full {evals[1]["val_mlm_full"]:.3f}, '
          f'dropped {evals[1]["val_mlm_drop"]:.3f} nats; unigram entropy '
          f'{entropy}') in summary, summary
  tokens_per_s = 8 * 32 * 60 / sum(r['step_time_s'] for r in rows)
  shown = float(re.search(r'; ([\d,]+) tokens/s on average', summary).group(1)
                .replace(',', ''))
  assert abs(shown - tokens_per_s) <= 1, (shown, tokens_per_s)
  assert f'Checkpoint: {tmp_path}/checkpoints/60\n' in summary
  for command in (f'python -m sctd_jax.export --workdir {tmp_path} --out {tmp_path}/hf',
                  f"pipeline('fill-mask', model='{tmp_path}/hf')",
                  f'--config.init={tmp_path} --config.task=tense',
                  f'python -m sctd_jax.evals.report {tmp_path} --out {tmp_path}/report'):
    assert command in summary, summary


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


def _row(step, loss=5.0, **extra):
  return dict(step=step, loss=loss, step_time_s=0.5, tokens_per_s=512.0, **extra)


@pytest.mark.parametrize('terminal', [True, False])
def test_one_progress_display(tmp_path, capsys, caplog, terminal):
  caplog.set_level(logging.INFO)
  reporter = metrics_log.Reporter(str(tmp_path), 0, 20, unigram_entropy=5.25,
                                  terminal=terminal)
  for step in range(1, 21):
    reporter.advance()
    if step % 10 == 0:
      reporter.write(_row(step, **({'val_mlm_full': 4.5, 'val_mlm_drop': 4.75}
                                   if step == 20 else {})))
  reporter.close()
  evaluation = ('step 20: validation MLM loss: full 4.500, dropped 4.750 nats; '
                'unigram entropy 5.250 (the loss of a model that ignores context)')
  logged = [r.getMessage() for r in caplog.records]
  err = capsys.readouterr().err
  if terminal:  # The bar alone, the evaluation printed above it once.
    assert logged == [] and err.count(evaluation) == 1 and '20/20' in err
  else:  # A line per row, then the evaluation; no bar.
    assert logged == ['step 10/20 loss 5.0000  512 tokens/s  ETA 0:00:05',
                      'step 20/20 loss 5.0000  512 tokens/s  ETA 0:00:00', evaluation]
    assert err == ''
  # 20 steps of 0.5 s, 256 tokens each.
  assert reporter.mean_tokens_per_s(256) == 512.0


def test_stopped_run_summary_gives_the_resume_command():
  resume = 'python -m sctd_jax.train --config configs/tiny.py --workdir runs/tiny'
  text = metrics_log.run_summary(
      'runs/tiny', 161, 1200, 100, 775.0, 12.5, None, 5.37, 579.4,
      '/abs/runs/tiny/checkpoints/161', stopped_by='SIGTERM', resume=resume,
      eval_every=200)
  assert text.splitlines() == [
      'Stopped by SIGTERM after step 161 of 1200 in 0:12:55 (steps 101-161 in '
      'this run, compile 12.5 s; 579 tokens/s on average).',
      'No evaluation yet (every 200 steps).',
      'Checkpoint: /abs/runs/tiny/checkpoints/161',
      f'Resume: {resume} (continues from the checkpoint)']
