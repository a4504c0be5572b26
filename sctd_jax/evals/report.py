"""Compares pretraining runs: the training budget of the paper's Tables 2 and
5, validation MLM loss per step and per hour (Figure 6), semantic drift
(Figure 3), probing (Figures 4 and 8) and fine-tuning (Tables 2 and 6).

  python -m sctd_jax.evals.report RUN_DIR [RUN_DIR ...] --out DIR [--baseline NAME]

Reads each training workdir's config.json and metrics.jsonl and, where they
exist, probe/probe.json (written by `sctd_jax.evals.probe --out RUN_DIR/probe`) and
finetune/TASK/eval_results.json. Writes DIR/report.md and the figures it
links, each only when some run has its data: val_mlm.png, train_loss.png,
drift.png, probe.png, finetune.png. A run is named by its directory's
basename (-2, -3, ... on repeats); the baseline is the run of method
'baseline' unless --baseline names another.
"""

import glob
import json
import os
from typing import NamedTuple

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax.evals import plots
from sctd_jax.evals import suites

# Keys each metrics.jsonl row needs for the budget and the loss curves.
ROW_KEYS = ('step', 'loss', 'step_time_s')
MISSING = '—'


class ReportError(cli.UserError):
  """A run directory that cannot be reported; the message names the path."""


class Run(NamedTuple):
  name: str
  path: str
  config: ml_collections.ConfigDict
  rows: list[dict]
  hours: np.ndarray                  # Training hours up to each row.
  probe: dict | None                 # probe.json: {task: {layer: accuracy}}.
  probe_test_examples: dict[str, int]  # probe.json's test set size per task.
  finetune: dict[str, dict]          # task -> eval_results.json.


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ReportError(f'{path} is unreadable: {e}') from None


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ReportError(f'{workdir} is not a training workdir: it has no config.json.')
  config = read_json(path)
  if not all(key in config for key in ('method', 'model', 'train')):
    raise ReportError(f'{path} is not a training config (no method, model and '
                      'train keys); is this an exported HF folder?')
  return config_lib.saved(config)


def read_metrics(workdir: str) -> list[dict]:
  """The rows of metrics.jsonl. A last line cut short (a run killed while
  writing it) is skipped; any other bad line is an error."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise ReportError(f'{path} not found: the run has not logged a step.')
  try:
    with open(path) as f:
      lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
  except (OSError, UnicodeDecodeError) as e:
    raise ReportError(f'{path} is unreadable: {e}') from None
  rows = []
  for i, (number, line) in enumerate(lines):
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1 and rows:
        logging.warning('%s line %d is cut short; ignored.', path, number)
        continue
      raise ReportError(f'{path} line {number} is not JSON: {e}') from None
    missing = [key for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
    if missing:
      raise ReportError(f'{path} line {number} lacks {", ".join(missing)}.')
    rows.append(row)
  if not rows:
    raise ReportError(f'{path} is empty: the run has not logged a step.')
  return rows


def training_hours(rows: list[dict]) -> np.ndarray:
  """Hours of training up to each row, the budget of Tables 2 and 5: the
  steps since the previous row times their step_time_s, which excludes
  compilation and evaluation (metrics_log.summarize)."""
  steps = np.array([r['step'] for r in rows], np.float64)
  step_time = np.array([r['step_time_s'] for r in rows], np.float64)
  return np.cumsum(np.diff(steps, prepend=0.0) * step_time) / 3600


def metric_names(results: dict) -> list[str]:
  """The metrics of an eval_results.json: its top-level floats."""
  return [key for key, value in results.items() if isinstance(value, float)]


def read_probe(workdir: str) -> tuple[dict | None, dict[str, int]]:
  """probe/probe.json as ({task: {layer: accuracy}}, {task: test examples}),
  or (None, {}) if there is none."""
  path = os.path.join(workdir, 'probe', 'probe.json')
  if not os.path.isfile(path):
    return None, {}
  result = read_json(path)
  counts = result.pop('test_examples', {}) if isinstance(result, dict) else {}
  if not (isinstance(result, dict) and all(
      isinstance(acc, dict) and all(layer.isdigit() for layer in acc)
      for acc in result.values())):
    raise ReportError(f'{path} is not {{task: {{layer: accuracy}}}} as sctd_jax.evals.probe writes.')
  return result, counts


def read_finetune(workdir: str) -> dict[str, dict]:
  """finetune/TASK/eval_results.json of every task, by task."""
  results = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'finetune', '*', 'eval_results.json'))):
    result = read_json(path)
    if not isinstance(result, dict) or 'num_seeds' not in result or not all(
        m in result.get('std', {}) for m in metric_names(result)):
      raise ReportError(f'{path} lacks num_seeds or a std of each metric.')
    results[os.path.basename(os.path.dirname(path))] = result
  return results


def load_run(name: str, workdir: str) -> Run:
  config = read_config(workdir)  # First: a non-workdir is named as such.
  rows = read_metrics(workdir)
  return Run(name, workdir, config, rows, training_hours(rows),
             *read_probe(workdir), read_finetune(workdir))


def load_runs(workdirs: list[str]) -> list[Run]:
  return [load_run(name, path) for name, path in zip(plots.run_names(workdirs), workdirs)]


def find_baseline(runs: list[Run], name: str | None = None) -> Run | None:
  """The run called `name`, or else the first of method 'baseline'."""
  if name is None:
    return next((r for r in runs if r.config.method == 'baseline'), None)
  for run in runs:
    if run.name == name:
      return run
  raise ReportError(f'--baseline {name}: no such run; the runs are '
                    f'{", ".join(r.name for r in runs)}.')


def last_value(run: Run, key: str):
  """`key` of the last row where it is not null, or None."""
  return next((r[key] for r in reversed(run.rows) if r.get(key) is not None), None)


def series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, hours, values) of the rows where `key` is not null."""
  keep = [i for i, r in enumerate(run.rows) if r.get(key) is not None]
  return (np.array([run.rows[i]['step'] for i in keep]), run.hours[keep],
          np.array([run.rows[i][key] for i in keep], np.float64))


def drift_keys(runs: list[Run]) -> list[str]:
  return sorted({k for run in runs for r in run.rows
                 for k, v in r.items() if k.startswith('drift_') and v is not None})


def predicted_cost(run: Run) -> float:
  """Training FLOPs of the run's steps by the cost model (docs/design.md section 2)."""
  return cost_model.train_flops_per_step(run.config, run.config.method) * run.rows[-1]['step']


def format_number(value, digits: int = 4) -> str:
  return MISSING if value is None else f'{value:.{digits}g}'


def _change(ratio: float | None) -> str:
  """A cost ratio as the paper prints it: -21.5% is 0.785 of the baseline's."""
  return MISSING if ratio is None else f'{100 * (ratio - 1):+.1f}%'


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header),
          *('| ' + ' | '.join(row) + ' |' for row in rows)]


def budget_table(runs: list[Run], baseline: Run | None) -> list[str]:
  """Tables 2 and 5: training hours and their change against the baseline,
  measured and by the cost model, beside the final validation and drift."""
  drifts = drift_keys(runs)
  header = ['run', 'method', 'steps', 'training hours', 'vs baseline (measured)',
            'vs baseline (cost model)', 'val_mlm_full', 'val_mlm_drop', *drifts]
  rows = []
  for run in runs:
    measured = predicted = None
    if baseline is not None:
      measured = run.hours[-1] / baseline.hours[-1] if baseline.hours[-1] > 0 else None
      predicted = predicted_cost(run) / predicted_cost(baseline)
    rows.append([run.name, run.config.method, str(run.rows[-1]['step']),
                 format_number(run.hours[-1], 3), _change(measured), _change(predicted),
                 *(format_number(last_value(run, key)) for key in
                   ('val_mlm_full', 'val_mlm_drop', *drifts))])
  return markdown_table(header, rows)


def finetune_table(runs: list[Run]) -> list[str]:
  """Mean ± std over seeds of each task's metrics, a column per run."""
  tasks = sorted({task for run in runs for task in run.finetune})
  rows = []
  for task in tasks:
    metrics = dict.fromkeys(m for run in runs if task in run.finetune
                            for m in metric_names(run.finetune[task]))
    for metric in metrics:
      cells = []
      for run in runs:
        results = run.finetune.get(task, {})
        cells.append(MISSING if metric not in results else
                     f'{results[metric]:.3f} ± {results["std"][metric]:.3f} '
                     f'({results["num_seeds"]} seeds)')
      rows.append([task, metric, *cells])
  return markdown_table(['task', 'metric', *(run.name for run in runs)], rows)


def probe_table(runs: list[Run]) -> list[str]:
  """Figures 4 and 8 in numbers: the last layer's accuracy and the best layer."""
  tasks = list(dict.fromkeys(task for run in runs if run.probe for task in run.probe))
  rows = []
  for task in tasks:
    cells = []
    for run in runs:
      accuracy = (run.probe or {}).get(task)
      if accuracy is None:
        cells.append(MISSING)
        continue
      last = max(accuracy, key=int)
      best = max(accuracy, key=lambda layer: accuracy[layer])
      cells.append(f'{accuracy[last]:.3f} (best {accuracy[best]:.3f} at layer {best})')
    rows.append([task, *cells])
  return markdown_table(['task', *(run.name for run in runs)], rows)


def dropped_layers(runs: list[Run]) -> tuple[int, int] | None:
  """(first, last) layer, from 1, that the first token-dropping run drops."""
  for run in runs:
    if run.config.method != 'baseline':
      first, last = config_lib.drop_layers(run.config)
      return first + 1, last + 1
  return None


VAL_PATHS = (('val_mlm_full', '-', 'full path'), ('val_mlm_drop', '--', 'dropped path'))
DRIFT_TITLES = {'drift_masked': 'Masked input (15% of tokens corrupted)',
                'drift_dropped': 'Token-dropping path (50% of tokens dropped)'}


def plot_validation(runs: list[Run], path: str) -> None:
  """Validation MLM loss over steps and over training hours (quality per
  time), on one loss scale."""
  panels = []
  for x_name, title in (('step', 'Validation MLM loss by step'),
                        ('training hours', 'Validation MLM loss by training time')):
    curves = []
    for i, run in enumerate(runs):
      for key, style, path_name in VAL_PATHS:
        steps, hours, values = series(run, key)
        if values.size:
          curves.append(plots.Line(f'{run.name} ({path_name})',
                                   steps if x_name == 'step' else hours, values, i, style))
    panels.append(plots.Panel(title, x_name, 'loss (nats)', curves))
  plots.lines(panels, path)


def plot_train_loss(runs: list[Run], path: str) -> None:
  curves = [plots.Line(f'{run.name} ({run.config.method})', *series(run, 'loss')[::2], i)
            for i, run in enumerate(runs)]
  plots.lines([plots.Panel('Training loss (the objective of each step)', 'step',
                           'loss (nats)', curves)], path)


def plot_drift(runs: list[Run], keys: list[str], path: str) -> None:
  """Each drift_* metric over steps, a curve per run (Figure 3), all panels
  on one similarity scale."""
  panels = []
  for key in keys:
    curves = [plots.Line(run.name, *series(run, key)[::2], i)
              for i, run in enumerate(runs) if series(run, key)[2].size]
    panels.append(plots.Panel(DRIFT_TITLES.get(key, key), 'step',
                              'cosine similarity to the original', curves))
  plots.lines(panels, path)


def plot_finetune(runs: list[Run], path: str) -> None:
  """A panel per task: each metric's mean over seeds as a point with a bar of
  one standard deviation, per run."""
  panels = []
  for task in sorted({task for run in runs for task in run.finetune}):
    metrics = list(dict.fromkeys(m for run in runs if task in run.finetune
                                 for m in metric_names(run.finetune[task])))
    values = {}
    for run in runs:
      results = run.finetune.get(task, {})
      for m in metrics:
        if m in results:
          mean, sd = results[m], results['std'][m]
          values[m, run.name] = (mean, mean - sd, mean + sd)
    seeds = max(run.finetune[task]['num_seeds'] for run in runs if task in run.finetune)
    panels.append(plots.Points(task, f'validation score (mean ± 1 sd, {seeds} seeds)',
                               metrics, [run.name for run in runs], values))
  plots.points(panels, path)


def test_examples(runs: list[Run]) -> dict[str, int]:
  return {task: n for run in runs for task, n in run.probe_test_examples.items()}


def absent(runs: list[Run]) -> list[str]:
  """What each run lacks, so a gap in the tables is explained."""
  lines = []
  for run in runs:
    gaps = [what for what, missing in (
        ('validation rows (val_mlm_full)', last_value(run, 'val_mlm_full') is None),
        ('probe/probe.json', run.probe is None),
        ('finetune/*/eval_results.json', not run.finetune)) if missing]
    if gaps:
      lines.append(f'- {run.name}: no {", no ".join(gaps)}.')
  return lines


def write_report(runs: list[Run], out: str, baseline: Run | None) -> str:
  """Writes out/report.md and its figures; returns report.md's path."""
  os.makedirs(out, exist_ok=True)
  figure = lambda name: os.path.join(out, name)
  md = ['# Pretraining report', '',
        *(f'- {run.name}: `{run.path}`' for run in runs), '',
        '## Training budget (Tables 2 and 5)', '',
        'Training hours sum the logged step times (compilation and evaluation '
        'excluded). "vs baseline" is the change against '
        + (f'{baseline.name}' if baseline else 'a baseline run; there is none')
        + ': measured, and predicted by the FLOPs cost model (docs/design.md section 2) '
        "from each run's steps, batch size and model. Validation and drift "
        'values are the last logged.', '', *budget_table(runs, baseline), '']
  figures = []  # (title, file name) of the figures written, in order.
  if any(last_value(run, 'val_mlm_full') is not None for run in runs):
    plot_validation(runs, figure('val_mlm.png'))
    figures.append(('Validation MLM loss by step and by training hours', 'val_mlm.png'))
  plot_train_loss(runs, figure('train_loss.png'))
  figures.append(('Training loss', 'train_loss.png'))
  drifts = drift_keys(runs)
  if drifts:
    plot_drift(runs, drifts, figure('drift.png'))
    figures.append(('Semantic drift (Figure 3)', 'drift.png'))
  if any(run.finetune for run in runs):
    md += ['## Fine-tuning', '', 'Mean ± standard deviation over seeds.', '',
           *finetune_table(runs), '']
    plot_finetune(runs, figure('finetune.png'))
    figures.append(('Fine-tuning', 'finetune.png'))
  summaries = {run.name: suites.read_summary(run.path) for run in runs}
  if any(summaries.values()):
    md += ['## Fine-tuning suites (Tables 2 and 3)', '',
           'Score in % of each task (its primary metric, best dev epoch, mean '
           'over seeds), from `sctd_jax.evals.suites`.', '',
           *suites.paper_table({k: v for k, v in summaries.items() if v}), '']
  if any(run.probe for run in runs):
    md += ['## Probing (Figures 4 and 8)', '',
           "Test accuracy of a linear probe on each layer's sentence vectors: "
           'the last layer, and the best layer.', '',
           *probe_table(runs), '']
    plots.probe_curves({run.name: run.probe for run in runs if run.probe},
                       figure('probe.png'), test_examples(runs), dropped_layers(runs))
    figures.append(('Probing accuracy by layer', 'probe.png'))
  gaps = absent(runs)
  if gaps:
    md += ['## Not available', '', *gaps, '']
  md += ['## Figures', '', *(f'![{title}]({name})' for title, name in figures), '']
  path = figure('report.md')
  with open(path, 'w') as f:
    f.write('\n'.join(md))
  return path


def define_flags() -> None:
  flags.DEFINE_string('out', None, 'Directory for report.md and its figures.')
  flags.DEFINE_string('baseline', None, "Run (directory basename) to compare "
                      "against; default: the run of method 'baseline'.")


def main(argv):
  if len(argv) < 2:
    raise ReportError('give one or more training workdirs: '
                      'python -m sctd_jax.evals.report RUN_DIR ... --out DIR')
  args = flags.FLAGS
  cli.output_dir(args.out, '--out')
  runs = load_runs(argv[1:])
  path = write_report(runs, args.out, find_baseline(runs, args.baseline))
  print(f'Wrote {path}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['out'], positional=True)
