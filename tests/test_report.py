"""The run report: rendered by the CLI from real tiny runs, its budget figures
checked on hand-written workdirs against a hand computation, and bad run
directories refused naming the path."""

import json
import pathlib
import subprocess
import sys

import pytest

from sctd_jax import config as config_lib
from sctd_jax.evals import report
from test_train import ROOT, SMALL

FINETUNE = {'task': 'mrpc', 'init': 'x', 'num_seeds': 3, 'accuracy': 0.8125, 'f1': 0.75,
            'std': {'accuracy': 0.0125, 'f1': 0.02},
            'per_seed': {'accuracy': [0.8, 0.8125, 0.825], 'f1': [0.73, 0.75, 0.77]}}


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A baseline and a token-dropping run of 4 steps, trained side by side,
  with hand-written probe and fine-tuning results for the baseline."""
  root = tmp_path_factory.mktemp('runs')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
       '--workdir', str(root / method), *SMALL, f'--config.method={method}',
       '--config.train.num_steps=4', '--config.train.eval_every=2',
       '--config.train.log_every=1', '--config.train.warmup_steps=1',
       '--config.train.eval_batches=1'],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
      for method in ('baseline', 'token_drop')]
  for proc in procs:
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
  _write(root / 'baseline' / 'probe' / 'probe.json',
         json.dumps({'tense': {'1': 0.5, '2': 0.875, '3': 0.625, '4': 0.75}}))
  _write(root / 'baseline' / 'finetune' / 'mrpc' / 'eval_results.json', json.dumps(FINETUNE))
  return root


def test_cli_renders_the_report_of_tiny_runs(runs, tmp_path):
  out = tmp_path / 'report'
  result = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.evals.report', str(runs / 'baseline'), str(runs / 'token_drop'),
       '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  md = (out / 'report.md').read_text()
  for name in ('val_mlm.png', 'train_loss.png', 'probe.png', 'finetune.png'):
    assert (out / name).stat().st_size > 0, name
    assert f']({name})' in md
  rows = [json.loads(line) for line in open(runs / 'token_drop' / 'metrics.jsonl')]
  has_drift = any(k.startswith('drift_') for r in rows for k in r)
  assert (out / 'drift.png').exists() == has_drift
  assert '| baseline | baseline | 4 |' in md and '| token_drop | token_drop | 4 |' in md
  assert f'{rows[-1]["val_mlm_drop"]:.4g}' in md
  assert '0.812 ± 0.013 (3 seeds) | — |' in md
  assert '| tense | 0.750 (best 0.875 at layer 2) | — |' in md
  assert '- token_drop: no probe/probe.json, no finetune/*/eval_results.json.' in md


def _config(method):
  c = config_lib.base_config()
  c.method = method
  c.model.vocab_size = 30522
  return c.to_json()


def _workdir(path, method, rows):
  _write(path / 'config.json', _config(method))
  _write(path / 'metrics.jsonl', ''.join(json.dumps(r) + '\n' for r in rows))
  return str(path)


def _row(step, step_time_s, **extra):
  return dict(step=step, loss=3.0, step_time_s=step_time_s, **extra)


@pytest.fixture
def hand_runs(tmp_path):
  """Hours by hand: baseline 100 steps x 18 s + 100 x 36 s = 1.5 h; token
  drop half of that, 0.75 h (-50%); SCTD 100 x 27 s = 0.75 h (-50%)."""
  return [
      _workdir(tmp_path / 'base', 'baseline',
               [_row(100, 18.0), _row(200, 36.0, val_mlm_full=2.5, drift_masked=0.9)]),
      _workdir(tmp_path / 'drop', 'token_drop',
               [_row(100, 9.0, val_mlm_full=3.5, val_mlm_drop=3.75, drift_dropped=0.7),
                _row(200, 18.0, val_mlm_full=3.25, val_mlm_drop=3.5, drift_dropped=None)]),
      _workdir(tmp_path / 'sctd', 'sctd', [_row(100, 27.0)]),
  ]


def test_budget_matches_a_hand_computation(hand_runs, tmp_path):
  runs = report.load_runs(hand_runs)
  assert [r.hours[-1] for r in runs] == pytest.approx([1.5, 0.75, 0.75])
  md = open(report.write_report(runs, str(tmp_path / 'out'),
                                report.find_baseline(runs))).read()
  # FLOPs per step at BERT-base: token dropping 0.7556 of the baseline's,
  # SCTD 0.8556 (tests/test_cost_model.py counts them by hand); the sctd run
  # took half the steps: 0.8556 / 2 = 0.4278.
  assert '| base | baseline | 200 | 1.5 | +0.0% | +0.0% | 2.5 | — | — | 0.9 |' in md
  assert '| drop | token_drop | 200 | 0.75 | -50.0% | -24.4% | 3.25 | 3.5 | 0.7 | — |' in md
  assert '| sctd | sctd | 100 | 0.75 | -50.0% | -57.2% | — | — | — | — |' in md
  assert '- sctd: no validation rows' in md
  assert (tmp_path / 'out' / 'drift.png').exists()
  assert not (tmp_path / 'out' / 'probe.png').exists()


def test_baseline_flag_picks_another_run(hand_runs, tmp_path):
  runs = report.load_runs(hand_runs)
  md = open(report.write_report(runs, str(tmp_path), report.find_baseline(runs, 'drop'))).read()
  assert '| base | baseline | 200 | 1.5 | +100.0% |' in md
  with pytest.raises(report.ReportError, match='no such run; the runs are base, drop, sctd'):
    report.find_baseline(runs, 'nope')


def test_a_cut_short_last_line_is_skipped(tmp_path):
  path = _workdir(tmp_path / 'run', 'baseline', [_row(1, 1.0), _row(2, 1.0)])
  with open(f'{path}/metrics.jsonl', 'a') as f:
    f.write('{"step": 3, "lo')
  assert [r['step'] for r in report.read_metrics(path)] == [1, 2]


@pytest.mark.parametrize('config, metrics, message', [
    (None, None, 'is not a training workdir: it has no config.json'),
    ('{"architectures": ["BertForMaskedLM"]}', None, 'is not a training config'),
    ('method', None, 'metrics.jsonl not found'),
    ('method', '\n', 'metrics.jsonl is empty'),
    ('method', '{"step": 1, "loss": 1, "step_time_s": 1}\nnot json\n{}\n', 'line 2 is not JSON'),
    ('method', '{"step": 1, "loss": 1}\n', 'line 1 lacks step_time_s'),
])
def test_bad_run_directory_is_refused_naming_the_path(tmp_path, config, metrics, message):
  run = tmp_path / 'run'
  run.mkdir()
  if config is not None:
    _write(run / 'config.json', _config('baseline') if config == 'method' else config)
  if metrics is not None:
    _write(run / 'metrics.jsonl', metrics)
  with pytest.raises(report.ReportError, match=message) as e:
    report.load_runs([str(run)])
  assert str(run) in str(e.value)


@pytest.mark.parametrize('relative, content', [
    ('probe/probe.json', '{"tense": [0.5]}'),
    ('probe/probe.json', '{"tense": '),
    ('finetune/mrpc/eval_results.json', '{"num_seeds": 1, "accuracy": 0.5, "std": {}}'),
])
def test_malformed_result_files_are_refused_naming_them(hand_runs, relative, content):
  _write(pathlib.Path(hand_runs[0]) / relative, content)
  with pytest.raises(report.ReportError, match=relative):
    report.load_runs(hand_runs[:1])


def test_a_cut_short_suite_summary_is_refused_naming_it(hand_runs, tmp_path):
  _write(pathlib.Path(hand_runs[0]) / 'finetune' / 'summary.json', '{"scores": {"mrpc"')
  runs = report.load_runs(hand_runs)
  with pytest.raises(report.cli.UserError, match='finetune/summary.json is unreadable'):
    report.write_report(runs, str(tmp_path / 'out'), report.find_baseline(runs, None))


def test_probe_figure_shades_the_layers_token_dropping_drops(hand_runs):
  # BERT-base shape: the cross-attention layer 5 to the last kept-only 10,
  # 0-indexed (docs/design.md section 1), are layers 6-11 counted from 1.
  assert report.dropped_layers(report.load_runs(hand_runs)) == (6, 11)
  assert report.dropped_layers(report.load_runs(hand_runs[:1])) is None


def test_report_includes_the_suite_table_of_runs_that_have_one(hand_runs, tmp_path):
  summary = {'init': hand_runs[2], 'suite': 'glue', 'num_seeds': 5,
             'scores': {'rte': 66.5, 'mrpc': 85.25}, 'average': 75.875}
  _write(tmp_path / 'sctd' / 'finetune' / 'summary.json', json.dumps(summary))
  runs = report.load_runs(hand_runs)
  md = open(report.write_report(runs, str(tmp_path / 'out'), report.find_baseline(runs))).read()
  assert '## Fine-tuning suites (Tables 2 and 3)' in md
  assert '| | rte | mrpc | Avg. |\n|---|---|---|---|\n| sctd | 66.50 | 85.25 | 75.88 |' in md
