"""Compares pretraining variants across seeds: the mean ± sd of each variant,
and its paired difference from a reference variant with a 95% interval.

  python -m sctd_jax.evals.seeds RUNS_DIR --out DIR [--variants a,b,...]
      [--reference token_drop] [--bench bench.json]

RUNS_DIR holds RUNS_DIR/seedS/VARIANT, each a training workdir with, where
they exist, probe/ and finetune/ as `sctd_jax.evals.report` reads them
(docs/results/run.sh makes this layout). Within a seed the variants share the
corpus, its held-out split and the tokenizer, so differences are paired by
seed: the interval is Student's t over the seeds' differences.

Measures of each run:
- the final validation MLM loss (full path);
- the validation loss at equal training time: time is counted in baseline
  steps, a step of a method costing its step time over the baseline's (from
  --bench, a `sctd_jax.bench --json` file measured alone, or else from the
  FLOPs cost model), and every run is read at the time the reference's run
  ends (linear between evaluations);
- the time to reach a target loss, the largest final loss of all the runs
  (so every run reaches it), in the same units;
- how far the validation loss still fell over the last 20% of the steps
  (whether the run was long enough for its curve to settle);
- drift: the mean similarity over the evaluations from step 200 (Figure 3);
- probing: the last layer's test accuracy, and the mean over the layers
  token dropping drops (Figures 4 and 8);
- fine-tuning: each task's metrics (one fine-tuning per pretraining seed).

Only the seeds with a run of every variant are compared, so that each
difference is paired and every mean is over the same seeds; seeds.md names
the seeds left out (a sweep in progress).

Each run's CPU time (user + system) is read from the time.txt run.sh writes.

Writes DIR/seeds.md, DIR/seeds.json (every run's measures) and the figures
seeds_val_mlm.png, seeds_differences.png and, with probes, seeds_probe.png
(accuracy by layer).
"""

import json
import math
import os
import re

from absl import flags
import numpy as np
from scipy import stats

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax import losses
from sctd_jax.evals import plots
from sctd_jax.evals import report

DRIFT_FROM_STEP = 200
LATE = 0.2   # The share of the steps whose loss fall says whether a run settled.
LOSS = 'val_mlm_full'


class SeedsError(cli.UserError):
  """A runs folder that cannot be compared; the message says why."""


def find_runs(root: str, variants: list[str] | None) -> dict[str, dict[int, str]]:
  """{variant: {seed: workdir}} of root/seedS/VARIANT, the workdirs with a
  metrics.jsonl, in the order of `variants` (default: sorted)."""
  found: dict[str, dict[int, str]] = {}
  if not os.path.isdir(root):
    raise SeedsError(f'{root} is not a folder; give the RUNS_DIR of docs/results/run.sh.')
  for entry in sorted(os.listdir(root)):
    match = re.fullmatch(r'seed(\d+)', entry)
    if not match or not os.path.isdir(os.path.join(root, entry)):
      continue
    for variant in sorted(os.listdir(os.path.join(root, entry))):
      workdir = os.path.join(root, entry, variant)
      if os.path.isfile(os.path.join(workdir, 'metrics.jsonl')):
        found.setdefault(variant, {})[int(match.group(1))] = workdir
  if not found:
    raise SeedsError(f'{root} has no seedS/VARIANT training workdirs.')
  if variants is None:
    return found
  missing = [v for v in variants if v not in found]
  if missing:
    raise SeedsError(f'{root} has no runs of {", ".join(missing)}; it has '
                     f'{", ".join(found)}.')
  return {v: found[v] for v in variants}


def complete_seeds(found: dict[str, dict[int, str]]
                   ) -> tuple[dict[str, dict[int, str]], dict[int, list[str]]]:
  """`found` kept to the seeds every variant ran, and {seed left out: the
  variants it has}."""
  common = set.intersection(*(set(seeds) for seeds in found.values()))
  if not common:
    raise SeedsError(f'no seed has a run of every variant ({", ".join(found)}); '
                     'name fewer with --variants, or wait for the runs.')
  left_out = {s: [v for v in found if s in found[v]]
              for s in sorted({s for seeds in found.values() for s in seeds} - common)}
  return {v: {s: w for s, w in seeds.items() if s in common}
          for v, seeds in found.items()}, left_out


def cpu_seconds(workdir: str) -> float | None:
  """User + system CPU seconds of the commands docs/results/run.sh timed for
  this run (pretraining, probing, fine-tuning; `/usr/bin/time -f '%e %U %S'`
  lines in its time.txt), None without one. A command killed before it
  ended wrote no line, so an interrupted run counts less than it cost."""
  path = os.path.join(workdir, 'time.txt')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    times = [re.fullmatch(r'([\d.]+) ([\d.]+) ([\d.]+)', line.strip()) for line in f]
  return sum(float(t.group(2)) + float(t.group(3)) for t in times if t)


def step_costs(runs: dict[str, dict[int, report.Run]], bench: str | None
               ) -> tuple[dict[str, float], str]:
  """Each variant's step time over the baseline's, and where it comes from."""
  any_run = lambda v: next(iter(runs[v].values()))
  if bench:
    rows = report.read_json(bench)
    rows = rows[0] if isinstance(rows, list) else rows
    measured = {r['method']: r['ratio'] for r in rows.get('rows', [])}
    missing = {any_run(v).config.method for v in runs} - set(measured)
    if missing:
      raise SeedsError(f'{bench} has no step time of {", ".join(sorted(missing))}.')
    return ({v: measured[any_run(v).config.method] for v in runs},
            f'step times measured alone by `sctd_jax.bench` ({bench}, {rows.get("date", "")})')
  ratio = lambda run: (cost_model.train_flops_per_step(run.config, run.config.method)
                       / cost_model.train_flops_per_step(run.config, 'baseline'))
  return {v: ratio(any_run(v)) for v in runs}, 'the FLOPs cost model'


def curve(run: report.Run, cost: float) -> tuple[np.ndarray, np.ndarray]:
  """(time in baseline steps, validation loss) at each evaluation."""
  steps, _, values = report.series(run, LOSS)
  if not values.size:
    raise SeedsError(f'{run.path} has no {LOSS} rows: did the run reach an evaluation?')
  return steps * cost, values


def time_to(times: np.ndarray, values: np.ndarray, target: float) -> float:
  """The first time the curve reaches `target`, linear between evaluations."""
  i = int(np.argmax(values <= target))
  if values[i] > target:
    return math.nan
  if i == 0:
    return float(times[0])
  t0, t1, v0, v1 = times[i - 1], times[i], values[i - 1], values[i]
  return float(t0 + (t1 - t0) * (v0 - target) / (v0 - v1))


def dropped(run: report.Run) -> tuple[int, int]:
  """The layers (first, last; from 1, as probe.json numbers them) that token
  dropping drops in a model of this run's shape, whatever its method."""
  first, last = config_lib.drop_layers(run.config)
  return first + 1, last + 1


def measures(run: report.Run, cost: float, end_time: float, target: float) -> dict:
  """Every measure of one run (the module docstring lists them). A run that
  ends before `end_time` has no loss at equal time (NaN), rather than its
  last one."""
  times, values = curve(run, cost)
  out = {'final val MLM loss': float(values[-1]),
         'val MLM loss at equal time': (float(np.interp(end_time, times, values))
                                        if end_time <= times[-1] * (1 + 1e-9) else math.nan),
         'time to target loss (baseline steps)': time_to(times, values, target),
         f'val MLM loss fall, last {LATE:.0%} of steps':
             float(np.interp((1 - LATE) * times[-1], times, values) - values[-1])}
  for key in ('drift_dropped', 'drift_masked'):
    steps, _, sims = report.series(run, key)
    late = sims[steps >= DRIFT_FROM_STEP]
    if late.size:   # A run too short for it has no drift measure, not NaN.
      out[f'{key} (mean from step {DRIFT_FROM_STEP})'] = float(np.mean(late))
  first, last = dropped(run)
  for task, accuracy in sorted((run.probe or {}).items()):
    out[f'probe {task}, last layer'] = float(accuracy[max(accuracy, key=int)])
    inside = [acc for layer, acc in accuracy.items() if first <= int(layer) <= last]
    if inside:
      out[f'probe {task}, dropped layers {first}-{last}'] = float(np.mean(inside))
  for task, result in sorted(run.finetune.items()):
    for metric in report.metric_names(result):
      out[f'fine-tune {task} {metric}'] = float(result[metric])
  return out


def paired(values: dict[int, float], reference: dict[int, float]) -> dict | None:
  """Mean of the per-seed differences and its 95% t-interval, over the seeds
  both have; None with fewer than two."""
  diffs = np.array([values[s] - reference[s] for s in values
                    if s in reference and not math.isnan(values[s] - reference[s])])
  if diffs.size < 2:
    return None
  half = stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size)
  return {'mean': float(diffs.mean()), 'low': float(diffs.mean() - half),
          'high': float(diffs.mean() + half), 'seeds': int(diffs.size)}


def summarize(table: dict[str, dict[int, dict]], reference: str) -> dict:
  """{variant: {measure: {'mean', 'sd', 'seeds', 'vs_reference'}}}."""
  names = list(dict.fromkeys(m for runs in table.values() for r in runs.values() for m in r))
  summary = {}
  for variant, runs in table.items():
    summary[variant] = {}
    for name in names:
      values = {s: r[name] for s, r in runs.items() if name in r}
      finite = np.array([v for v in values.values() if not math.isnan(v)])
      if not finite.size:
        continue
      ref = {s: r[name] for s, r in table[reference].items() if name in r}
      summary[variant][name] = {
          'mean': float(finite.mean()),
          'sd': float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
          'seeds': int(finite.size),
          'vs_reference': None if variant == reference else paired(values, ref)}
  return summary


def _cell(entry: dict | None) -> str:
  if entry is None:
    return report.MISSING
  if entry['seeds'] == 1:
    return f'{entry["mean"]:.4f} (n=1)'
  return f'{entry["mean"]:.4f} ± {entry["sd"]:.4f} (n={entry["seeds"]})'


def _difference(entry: dict | None) -> str:
  diff = (entry or {}).get('vs_reference')
  if diff is None:
    return report.MISSING
  mark = '**' if diff['low'] > 0 or diff['high'] < 0 else ''
  return f'{mark}{diff["mean"]:+.4f} [{diff["low"]:+.4f}, {diff["high"]:+.4f}]{mark}'


def _lambda(config) -> str:
  """The weight of one unit of per-example KL against the MLM loss."""
  if config.method != 'sctd':
    return report.MISSING
  return f'{losses.effective_lambda(config):.4g}'


def per_seed_table(table: dict[str, dict[int, dict]]) -> list[str]:
  seeds = sorted({s for runs in table.values() for s in runs})
  rows = [[f'seed {s}', *(f"{table[v][s]['final val MLM loss']:.4f}"
                          if s in table[v] else report.MISSING for v in table)]
          for s in seeds]
  return report.markdown_table(['final val MLM loss', *table], rows)


def _mean_sd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and sd over the seeds (rows); sd 0 for one seed."""
  sd = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(values[0])
  return values.mean(0), sd


def plot_curves(runs: dict[str, dict[int, report.Run]], costs: dict[str, float],
                path: str) -> None:
  """Mean validation loss over seeds by step and by time, with a band of ± 1
  sd, on one loss scale."""
  panels = []
  for title, xlabel, by_time in (('by step', 'step', False),
                                 ('by training time', 'time (baseline steps)', True)):
    lines = []
    for i, (variant, seeds) in enumerate(runs.items()):
      curves = [curve(run, costs[variant] if by_time else 1.0) for run in seeds.values()]
      size = min(len(t) for t, _ in curves)
      values = np.stack([v[:size] for _, v in curves])
      mean, sd = _mean_sd(values)
      lines.append(plots.Line(f'{variant} ({len(curves)} seeds)', curves[0][0][:size],
                              mean, i, band=(mean - sd, mean + sd)))
    panels.append(plots.Panel(f'Validation MLM loss {title}', xlabel,
                              'loss (nats), mean ± 1 sd', lines))
  plots.lines(panels, path)


def plot_probes(runs: dict[str, dict[int, report.Run]], path: str) -> bool:
  """Probe accuracy by layer, mean over seeds with a band of ± 1 sd, a panel
  per task, token dropping's layers shaded (Figures 4 and 8). False, and no
  figure, without probes."""
  probed = {v: [r.probe for r in seeds.values() if r.probe] for v, seeds in runs.items()}
  tasks = list(dict.fromkeys(t for probes in probed.values() for p in probes for t in p))
  if not tasks:
    return False
  first, last = dropped(next(iter(next(iter(runs.values())).values())))
  panels = []
  for task in tasks:
    lines = []
    for i, (variant, probes) in enumerate(probed.items()):
      layers = sorted(probes[0][task], key=int) if probes else []
      if not layers:
        continue
      values = np.array([[p[task][l] for l in layers] for p in probes])
      mean, sd = _mean_sd(values)
      lines.append(plots.Line(f'{variant} ({len(probes)} seeds)',
                              np.array([int(l) for l in layers]), mean, i,
                              band=(mean - sd, mean + sd)))
    panels.append(plots.Panel(plots.PROBE_TITLES.get(task, task), 'layer',
                              'probe test accuracy, mean ± 1 sd', lines,
                              shade=(first - 0.5, last + 0.5), shade_label='dropped layers',
                              integer_x=True))
  plots.lines(panels, path)
  return True


def plot_differences(summary: dict, reference: str, path: str) -> bool:
  """The paired differences from the reference with their 95% intervals, a
  panel per kind of measure (losses, drift, accuracies). False, and no
  figure, while no variant has two seeds paired with the reference's."""
  groups = (('Losses (nats; below 0: lower than ' + reference + ')',
             lambda m: 'loss' in m and not m.startswith('time') and 'fall' not in m),
            ('Drift (similarity; above 0: less drift)', lambda m: m.startswith('drift')),
            ('Probing and fine-tuning (accuracy)',
             lambda m: m.startswith(('probe', 'fine-tune'))))
  variants = [v for v in summary if v != reference]
  panels = []
  for title, member in groups:
    values = {(m, v): (d['mean'], d['low'], d['high'])
              for v in variants for m, e in summary[v].items()
              if member(m) and (d := e['vs_reference'])}
    categories = list(dict.fromkeys(m for m, _ in values))
    if categories:
      panels.append(plots.Points(title, f'difference from {reference}, 95% CI',
                                 categories, variants, values, zero=0.0))
  if panels:
    plots.points(panels, path)
  return bool(panels)


def _cpu_minutes(seconds: dict[int, float | None]) -> str:
  timed = [s for s in seconds.values() if s is not None]
  return f'{np.mean(timed) / 60:.1f} (n={len(timed)})' if timed else report.MISSING


def write(runs, table, summary, costs, cpu, source, reference, target, left_out,
          out) -> str:
  """Writes out/seeds.md, seeds.json and the figures; returns seeds.md's path."""
  os.makedirs(out, exist_ok=True)
  any_run = {v: next(iter(seeds.values())) for v, seeds in runs.items()}
  names = list(dict.fromkeys(m for v in summary.values() for m in v))
  plot_curves(runs, costs, os.path.join(out, 'seeds_val_mlm.png'))
  differences = plot_differences(summary, reference, os.path.join(out, 'seeds_differences.png'))
  probes = plot_probes(runs, os.path.join(out, 'seeds_probe.png'))
  timed = [s for seeds in cpu.values() for s in seeds.values() if s is not None]
  cpu_total = (f'CPU time recorded by run.sh (user + system, pretraining, probing and '
               f'fine-tuning): {sum(timed) / 3600:.2f} h over {len(timed)} runs; a '
               'command killed before it ended wrote no line, so an interrupted '
               'run counts less than it cost.' if timed
               else 'No run has a time.txt from run.sh, so CPU time is not reported.')
  seeds = sorted(next(iter(runs.values())))
  skipped = (' Left out, lacking a variant: ' + '; '.join(
      f'seed {s} ({", ".join(v)} only)' for s, v in left_out.items()) + '.' if left_out else '')
  md = ['# Variants across seeds', '',
        f'Seeds {", ".join(map(str, seeds))}, each with a run of every variant: '
        f'{", ".join(runs)}.{skipped} '
        f'Time is counted in baseline steps from {source}; the equal-time loss '
        f'is read when {reference} ends (a run that ends sooner has none), and '
        f'the target loss is {target:.4f}, '
        f'the largest final loss of all runs. {cpu_total}', '',
        *report.markdown_table(['variant', 'method', 'step cost', 'effective λ',
                                'CPU minutes a run'],
                               [[v, r.config.method, f'{costs[v]:.3f}', _lambda(r.config),
                                 _cpu_minutes(cpu[v])] for v, r in any_run.items()]), '',
        '## Mean ± sd over seeds', '',
        *report.markdown_table(['measure', *runs], [[m, *(_cell(summary[v].get(m)) for v in runs)]
                                             for m in names]), '',
        f'## Paired difference from {reference}, mean [95% CI]', '',
        'Bold: the interval excludes 0.' if differences else
        f'None yet: a difference needs two seeds run with both the variant and {reference}.', '',
        *report.markdown_table(['measure', *(v for v in runs if v != reference)],
                       [[m, *(_difference(summary[v].get(m)) for v in runs if v != reference)]
                        for m in names]), '',
        '## Final validation loss per seed', '', *per_seed_table(table), '',
        '## Figures', '', '![Validation loss across seeds](seeds_val_mlm.png)', '',
        *([f'![Paired differences from {reference}](seeds_differences.png)', '']
          if differences else []),
        *(['![Probe accuracy by layer](seeds_probe.png)', ''] if probes else [])]
  with open(os.path.join(out, 'seeds.json'), 'w') as f:
    json.dump({'reference': reference, 'seeds': seeds,
               'left_out': {str(s): v for s, v in left_out.items()},
               'target_loss': target, 'time_source': source,
               'step_cost': costs, 'cpu_seconds': {v: {str(s): c for s, c in t.items()}
                                                   for v, t in cpu.items()},
               'runs': {v: {str(s): r for s, r in t.items()} for v, t in table.items()},
               'summary': summary}, f, indent=1)
  path = os.path.join(out, 'seeds.md')
  with open(path, 'w') as f:
    f.write('\n'.join(md))
  return path


def compare(root: str, out: str, variants: list[str] | None = None,
            reference: str = 'token_drop', bench: str | None = None) -> str:
  """Reads every run under `root`, measures and compares them; returns the
  path of the written seeds.md."""
  found = find_runs(root, variants)
  if reference not in found:
    raise SeedsError(f'--reference {reference}: no such variant; the variants '
                     f'are {", ".join(found)}.')
  found, left_out = complete_seeds(found)
  runs = {v: {s: report.load_run(f'{v}/seed{s}', w) for s, w in seeds.items()}
          for v, seeds in found.items()}
  costs, source = step_costs(runs, bench)
  end_time = np.mean([curve(r, costs[reference])[0][-1] for r in runs[reference].values()])
  target = max(curve(r, 1.0)[1][-1] for seeds in runs.values() for r in seeds.values())
  table = {v: {s: measures(r, costs[v], end_time, target) for s, r in seeds.items()}
           for v, seeds in runs.items()}
  summary = summarize(table, reference)
  cpu = {v: {s: cpu_seconds(w) for s, w in seeds.items()} for v, seeds in found.items()}
  return write(runs, table, summary, costs, cpu, source, reference, target, left_out, out)


def define_flags() -> None:
  flags.DEFINE_string('out', None, 'Folder for seeds.md, seeds.json and the figures.')
  flags.DEFINE_list('variants', None, 'Variants (folder names) in this order; default all.')
  flags.DEFINE_string('reference', 'token_drop', 'The variant differences are taken from.')
  flags.DEFINE_string('bench', None, 'A `sctd_jax.bench --json` file for the step '
                      'times; default: the FLOPs cost model.')


def main(argv):
  if len(argv) != 2:
    raise SeedsError('give one runs folder: python -m sctd_jax.evals.seeds RUNS_DIR --out DIR')
  args = flags.FLAGS
  cli.output_dir(args.out, '--out')
  path = compare(argv[1], args.out, args.variants, args.reference, args.bench)
  print(f'Wrote {path}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['out'], positional=True)
