"""The comparison across seeds: its measures and paired intervals checked on
hand-written workdirs against hand computations (Student's t from a printed
table), rendered by the CLI, and bad folders refused in one line."""

import json
import math
import subprocess
import sys

import pytest

from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax.evals import seeds
from test_train import ROOT

T_975_2DF = 4.302653  # Student's t, 97.5% quantile, 2 degrees of freedom.
# Final validation losses per seed; differences from token_drop: sctd
# -0.1, -0.2, -0.3 (mean -0.2, sd 0.1); baseline -0.3, -0.1, -0.2.
FINAL = {'baseline': [4.0, 4.2, 4.1], 'token_drop': [4.3, 4.3, 4.3], 'sctd': [4.2, 4.1, 4.0]}


def _config(method):
  """A 4-layer model: token dropping drops its layers 2-3 (from 1)."""
  config = config_lib.base_config()
  config.method, config.model.num_layers = method, 4
  return config


def _workdir(path, method, final, seed):
  """A run with evaluations at steps 100 and 200: loss 5.0, then `final`;
  dropped-path drift 0.8 then 0.9 (not for the baseline); a probe whose
  last layer grows with the seed (its dropped layers average 0.6) and a
  fine-tuning result."""
  path.mkdir(parents=True)
  config = _config(method)
  (path / 'config.json').write_text(config.to_json())
  rows = []
  for step, loss, sim in ((100, 5.0, 0.8), (200, final, 0.9)):
    row = {'step': step, 'loss': loss, 'step_time_s': 0.1, 'val_mlm_full': loss}
    if method != 'baseline':
      row['drift_dropped'] = sim
    rows.append(row)
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  (path / 'probe').mkdir()
  (path / 'probe' / 'probe.json').write_text(
      json.dumps({'tense': {'1': 0.5, '2': 0.55, '3': 0.65, '4': 0.6 + 0.1 * seed}}))
  (path / 'finetune' / 'tense').mkdir(parents=True)
  (path / 'finetune' / 'tense' / 'eval_results.json').write_text(json.dumps(
      {'accuracy': 0.9, 'num_seeds': 1, 'std': {'accuracy': 0.0}}))


@pytest.fixture
def root(tmp_path):
  for method, finals in FINAL.items():
    for seed, final in enumerate(finals):
      _workdir(tmp_path / f'seed{seed}' / method, method, final, seed)
  (tmp_path / 'seed0' / 'tokenizer').mkdir()  # Not a workdir: ignored.
  (tmp_path / 'seed9').write_text('')  # Not a folder: ignored.
  return tmp_path


def test_paired_interval_is_students_t_over_the_seeds(root, tmp_path):
  seeds.compare(str(root), str(tmp_path / 'out'), ['baseline', 'token_drop', 'sctd'])
  summary = json.loads((tmp_path / 'out' / 'seeds.json').read_text())['summary']
  sctd = summary['sctd']['final val MLM loss']
  assert sctd['mean'] == pytest.approx(4.1)
  assert sctd['sd'] == pytest.approx(0.1)
  half = T_975_2DF * 0.1 / math.sqrt(3)
  diff = sctd['vs_reference']
  assert (diff['mean'], diff['low'], diff['high'], diff['seeds']) == pytest.approx(
      (-0.2, -0.2 - half, -0.2 + half, 3))
  assert summary['token_drop']['final val MLM loss']['vs_reference'] is None
  # The probe's last layer (layer 4): 0.6, 0.7, 0.8; the same for every variant.
  probe = summary['sctd']['probe tense, last layer']
  assert probe['mean'] == pytest.approx(0.7)
  assert probe['vs_reference']['mean'] == pytest.approx(0.0)
  # Layers 2-3, token dropping's in a 4-layer model: (0.55 + 0.65) / 2.
  assert summary['baseline']['probe tense, dropped layers 2-3']['mean'] == pytest.approx(0.6)
  assert (tmp_path / 'out' / 'seeds_probe.png').stat().st_size > 0
  # The baseline has no dropped path, so no drift measure.
  assert 'drift_dropped (mean from step 200)' not in summary['baseline']
  assert summary['sctd']['drift_dropped (mean from step 200)']['mean'] == pytest.approx(0.9)
  # No run.sh time files here: the page says so instead of '0.00 h over 0 runs'.
  md = (tmp_path / 'out' / 'seeds.md').read_text()
  assert 'No run has a time.txt' in md and 'over 0 runs' not in md


def test_equal_time_and_time_to_target_by_hand(root, tmp_path):
  """With the cost model's step costs (baseline 1, token_drop c_t, sctd c_s),
  token_drop ends at time 200 c_t; each run's loss there and its first time
  at the target (the largest final loss, 4.3) are linear between its two
  evaluations, at (100, 5.0) and (200, final) in steps."""
  seeds.compare(str(root), str(tmp_path / 'out'))
  saved = json.loads((tmp_path / 'out' / 'seeds.json').read_text())
  cost = saved['step_cost']
  # The runs' config, costed as test_cost_model checks by hand.
  ratios = cost_model.step_ratios(_config('sctd'))
  assert cost == pytest.approx({'baseline': 1.0, 'token_drop': ratios['token_drop'],
                                'sctd': ratios['sctd']}, rel=1e-12)
  assert 0.5 < cost['token_drop'] < cost['sctd'] < 1.0
  end = 200 * cost['token_drop']
  assert saved['target_loss'] == 4.3
  for method, finals in FINAL.items():
    for seed, final in enumerate(finals):
      run = saved['runs'][method][str(seed)]
      step = end / cost[method]
      assert run['val MLM loss at equal time'] == pytest.approx(
          5.0 + (final - 5.0) * (step - 100) / 100)
      at_target = 100 + 100 * (5.0 - 4.3) / (5.0 - final)
      assert run['time to target loss (baseline steps)'] == pytest.approx(at_target * cost[method])
      # Step 160 (80% of 200) lies 60% of the way from 5.0 to `final`.
      assert run['val MLM loss fall, last 20% of steps'] == pytest.approx(0.4 * (5.0 - final))
  md = (tmp_path / 'out' / 'seeds.md').read_text()
  assert '| sctd | sctd |' in md and '0.05 |' in md  # effective λ under 'batch'
  for figure in ('seeds_val_mlm.png', 'seeds_differences.png'):
    assert (tmp_path / 'out' / figure).stat().st_size > 0


def test_bench_step_times_replace_the_cost_model(root, tmp_path):
  bench = tmp_path / 'bench.json'
  bench.write_text(json.dumps({'date': 'd', 'rows': [
      {'method': 'baseline', 'ratio': 1.0}, {'method': 'token_drop', 'ratio': 0.5},
      {'method': 'sctd', 'ratio': 0.4}]}))
  seeds.compare(str(root), str(tmp_path / 'out'), bench=str(bench))
  saved = json.loads((tmp_path / 'out' / 'seeds.json').read_text())
  assert saved['step_cost'] == {'baseline': 1.0, 'sctd': 0.4, 'token_drop': 0.5}
  # token_drop ends at time 100 = baseline step 100: the baseline's first evaluation.
  assert saved['runs']['baseline']['0']['val MLM loss at equal time'] == pytest.approx(5.0)
  # sctd, cheaper here, ends at time 80: it has no loss at time 100, not its last one.
  assert all(math.isnan(run['val MLM loss at equal time'])
             for run in saved['runs']['sctd'].values())
  assert 'val MLM loss at equal time' not in saved['summary']['sctd']


def test_seeds_without_every_variant_are_left_out_and_named(root, tmp_path):
  """A sweep in progress: seed 3 has token_drop (final 1.0, far below the
  others) but no sctd yet. Means and differences stay over seeds 0-2."""
  _workdir(root / 'seed3' / 'token_drop', 'token_drop', 1.0, 3)
  _workdir(root / 'seed3' / 'baseline', 'baseline', 1.0, 3)
  seeds.compare(str(root), str(tmp_path / 'out'), ['baseline', 'token_drop', 'sctd'])
  saved = json.loads((tmp_path / 'out' / 'seeds.json').read_text())
  assert saved['seeds'] == [0, 1, 2]
  assert saved['left_out'] == {'3': ['baseline', 'token_drop']}
  assert saved['target_loss'] == 4.3   # not from seed 3's runs
  final = saved['summary']['token_drop']['final val MLM loss']
  assert (final['mean'], final['seeds']) == (pytest.approx(4.3), 3)
  assert saved['summary']['baseline']['final val MLM loss']['vs_reference']['mean'] == \
      pytest.approx(-0.2)
  md = (tmp_path / 'out' / 'seeds.md').read_text()
  assert 'Seeds 0, 1, 2, each with a run of every variant' in md
  assert 'Left out, lacking a variant: seed 3 (baseline, token_drop only).' in md
  # Named alone, token_drop and baseline are compared over all four seeds.
  kept, left_out = seeds.complete_seeds(seeds.find_runs(str(root), ['baseline', 'token_drop']))
  assert [sorted(kept[v]) for v in kept] == [[0, 1, 2, 3]] * 2 and not left_out
  # A variant whose only seed no other variant ran leaves nothing to pair.
  _workdir(root / 'seed5' / 'sctd_stop_grad', 'sctd', 4.0, 5)
  with pytest.raises(seeds.SeedsError, match='no seed has a run of every variant'):
    seeds.compare(str(root), str(tmp_path / 'three'), ['token_drop', 'sctd_stop_grad'])


@pytest.mark.parametrize('where, kwargs, message', [
    ('nowhere', {}, 'is not a folder'),
    ('', {'variants': ['baseline', 'bogus']}, 'has no runs of bogus'),
    ('', {'reference': 'bogus'}, '--reference bogus: no such variant'),
])
def test_bad_folders_are_refused_naming_what_is_wrong(root, tmp_path, where, kwargs, message):
  with pytest.raises(seeds.SeedsError, match=message):
    seeds.compare(str(root / where), str(tmp_path / 'out'), **kwargs)


def test_cli_errors_are_one_line(root):
  """Through the CLI (a SeedsError above is a UserError too): one line, no
  traceback."""
  result = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.evals.seeds', str(root), f'--out={root}/seed9'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert 'seed9 is a file, not a folder' in result.stderr, result.stderr
  assert 'Traceback' not in result.stderr


def test_cpu_time_is_summed_from_run_sh_time_files(root, tmp_path):
  """/usr/bin/time's lines (wall, user, system) are summed as user + system;
  the line it writes for a failed command is skipped; a run without
  time.txt has no CPU time."""
  (root / 'seed0' / 'sctd' / 'time.txt').write_text(
      '100.0 50.0 10.0\nCommand exited with non-zero status 1\n7.5 30.0 30.0\n')
  (root / 'seed1' / 'sctd' / 'time.txt').write_text('60 150 30\n')
  seeds.compare(str(root), str(tmp_path / 'out'))
  cpu = json.loads((tmp_path / 'out' / 'seeds.json').read_text())['cpu_seconds']
  assert cpu['sctd'] == {'0': 120.0, '1': 180.0, '2': None}
  assert cpu['baseline'] == {'0': None, '1': None, '2': None}
  md = (tmp_path / 'out' / 'seeds.md').read_text()
  assert '0.08 h over 2 runs' in md        # 300 s
  assert '| 2.5 (n=2) |' in md              # sctd: (120 + 180) / 2 s a run


def test_one_seed_so_far_gives_means_and_no_differences(tmp_path):
  """Early in a sweep each variant has one seed: the page gives the values,
  says why there are no intervals yet, and draws no differences figure."""
  for method in ('token_drop', 'sctd'):
    _workdir(tmp_path / 'runs' / 'seed0' / method, method, FINAL[method][0], 0)
  seeds.compare(str(tmp_path / 'runs'), str(tmp_path / 'out'))
  md = (tmp_path / 'out' / 'seeds.md').read_text()
  assert '| final val MLM loss | 4.2000 (n=1) | 4.3000 (n=1) |' in md, md
  assert 'None yet: a difference needs two seeds' in md
  assert 'seeds_differences.png' not in md
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
      'seeds.json', 'seeds.md', 'seeds_probe.png', 'seeds_val_mlm.png']
