"""Every fine-tuning task of one of the paper's tables, with its settings:

  python -m sctd_jax.evals.suites --init RUN --suite paper [--out RUN/finetune] \
      [--data_dir DIR] [--squad_dir DIR] [--num_seeds 5]

Suites: `glue` (Table 2: CoLA, SST-2, MRPC, STS-B, RTE, MNLI), `superglue`
(Table 3: BoolQ, CB, MultiRC, COPA), `squad` (Table 3: v1.1 and v2.0) and
`paper` (all of them); `--tasks` runs a subset. Each task runs Table 7's
learning rate, batch size and steps or epochs, the paper's input length
(MAX_LENGTH: 512 for the passage tasks, 384 for SQuAD, 256 otherwise), 5
seeds, and reports the best dev epoch's score (fairseq's recipe) averaged
over the seeds. A task reads DIR/TASK/train.jsonl and validation.jsonl (or
.tsv, .csv) from `--data_dir` when they exist, else its Hub data; SQuAD reads
the official train-v1.1.json, dev-v1.1.json, train-v2.0.json and
dev-v2.0.json from `--squad_dir`.

OUT/TASK/ holds each task's files (so `sctd_jax.evals.report`, given RUN,
includes them, and this table when OUT is RUN/finetune); OUT/summary.json
has every task's score in % and their average, and OUT/table.md the same
laid out as the paper's tables.
"""

import glob
import json
import os
import types

from absl import flags
from absl import logging
import numpy as np

from sctd_jax import cli
from sctd_jax.evals import finetune
from sctd_jax.evals import squad
from sctd_jax.evals import tasks
from sctd_jax import metrics_log

SUITES = {
    'glue': ('cola', 'sst2', 'mrpc', 'stsb', 'rte', 'mnli'),
    'superglue': ('boolq', 'cb', 'multirc', 'copa'),
    'squad': ('squad_v1', 'squad_v2'),
}
SUITES['paper'] = SUITES['glue'] + SUITES['superglue'] + SUITES['squad']
# Section 4.1: 384 for SQuAD, 256 or 512 for the others (512 where a passage
# is read).
MAX_LENGTH = {'boolq': 512, 'multirc': 512}
SQUAD_FILES = {'squad_v1': ('train-v1.1.json', 'dev-v1.1.json'),
               'squad_v2': ('train-v2.0.json', 'dev-v2.0.json')}


def local_files(data_dir: str, task: str) -> tuple[str, str]:
  """DIR/TASK/train.* and validation.* if both exist, else ('', '')."""
  found = [sorted(glob.glob(os.path.join(data_dir, task, f'{split}.*')))
           for split in ('train', 'validation')] if data_dir else [[], []]
  return (found[0][0], found[1][0]) if all(found) else ('', '')


def run_classification(args, task: str, out: str) -> float:
  """One GLUE/SuperGLUE task through `finetune`; its primary score in %."""
  config = finetune.base_config()
  config.update(init=args.init, task=task, seed=args.seed,
                num_seeds=args.num_seeds, eval_every_epoch=True)
  config.data.max_length = (args.max_length if args.max_length > 0 else
                            MAX_LENGTH.get(task, 256))
  config.data.train_file, config.data.validation_file = local_files(args.data_dir, task)
  if args.max_steps > 0:
    config.train.num_steps = args.max_steps
  results = finetune.finetune(config, out, '--out')
  return 100.0 * results[finetune.primary_metric(tasks.get(task))]


def squad_files(args, task: str) -> tuple[str, str]:
  """The official train and dev files of `task` in --squad_dir."""
  train_file, dev_file = (os.path.join(args.squad_dir or '', f)
                          for f in SQUAD_FILES[task])
  if not (os.path.isfile(train_file) and os.path.isfile(dev_file)):
    raise cli.UserError(f'{task} needs --squad_dir with the official '
                        f'{" and ".join(SQUAD_FILES[task])}.')
  return train_file, dev_file


def run_squad(args, task: str, out: str) -> float:
  """SQuAD v1.1 or v2.0 through `squad`; its exact match in %."""
  train_file, dev_file = squad_files(args, task)
  options = types.SimpleNamespace(
      init=args.init, train_file=train_file, dev_file=dev_file,
      max_length=args.max_length if args.max_length > 0 else 384,
      doc_stride=128, max_answer_length=30, learning_rate=3e-5, batch_size=12,
      num_epochs=2.0, eval_batch_size=64, seed=args.seed, num_seeds=args.num_seeds)
  return squad.run(options, out)['exact_match']


def read_summary(workdir: str) -> dict | None:
  """WORKDIR/finetune/summary.json, the suite's default output, if any."""
  path = os.path.join(workdir, 'finetune', 'summary.json')
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise cli.UserError(f'{path} is unreadable ({e}); rerun python -m '
                        'sctd_jax.evals.suites for that run, or remove the file.') from None


def paper_table(summaries: dict[str, dict]) -> list[str]:
  """Markdown lines laid out as the paper's tables: a row per run (name ->
  summary.json), a column per task (score in %) and the average."""
  names = list(dict.fromkeys(t for s in summaries.values() for t in s['scores']))
  lines = ['| | ' + ' | '.join(names) + ' | Avg. |', '|---|' + '---|' * (len(names) + 1)]
  for run, summary in summaries.items():
    cells = [f"{summary['scores'][t]:.2f}" if t in summary['scores'] else '-'
             for t in names]
    lines.append(f'| {run} | ' + ' | '.join(cells) + f" | {summary['average']:.2f} |")
  return lines


def run(args, out: str) -> dict:
  names = args.tasks.split(',') if args.tasks else SUITES[args.suite]
  unknown = [n for n in names if n not in SQUAD_FILES and n not in tasks.TASKS]
  if unknown:
    raise cli.UserError(f'--tasks has unknown {unknown}; known: '
                        f'{sorted({*tasks.TASKS, *SQUAD_FILES})}.')
  for name in names:  # Before hours of the other tasks.
    if name in SQUAD_FILES:
      squad_files(args, name)
  scores = {}
  for name in names:
    run_task = run_squad if name in SQUAD_FILES else run_classification
    scores[name] = run_task(args, name, os.path.join(out, name))
    logging.info('%s: %.2f', name, scores[name])
  summary = {'init': args.init, 'suite': args.suite, 'num_seeds': args.num_seeds,
             'scores': scores, 'average': float(np.mean(list(scores.values())))}
  metrics_log.write_json(os.path.join(out, 'summary.json'), summary)
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write('\n'.join(paper_table({os.path.basename(os.path.normpath(args.init)):
                                    summary})) + '\n')
  return summary


def define_flags() -> None:
  flags.DEFINE_string('init', None, 'Pretraining workdir, HF BERT folder or Hub id.')
  flags.DEFINE_enum('suite', 'paper', list(SUITES), 'Tasks of which table.')
  flags.DEFINE_string('tasks', '', 'Comma-separated subset instead of the suite.')
  flags.DEFINE_string('out', '', 'Output directory; default INIT/finetune, or '
                      'finetune/ORG--NAME for a Hub id.')
  flags.DEFINE_string('data_dir', '', 'Local task files: DIR/TASK/train.*, validation.*.')
  flags.DEFINE_string('squad_dir', '', 'Folder of the official SQuAD JSON files.')
  flags.DEFINE_integer('seed', 0, 'First seed.')
  flags.DEFINE_integer('num_seeds', 5, 'Seeds per task (paper: 5).')
  flags.DEFINE_integer('max_length', -1, 'Tokens per example for every task; '
                       "-1: the paper's per task (MAX_LENGTH).")
  flags.DEFINE_integer('max_steps', -1, 'Cap on each classification task\'s steps '
                       '(a smoke run); -1: Table 7\'s.')


def default_out(init: str) -> str:
  """INIT/finetune for a local run or folder; finetune/ORG--NAME for a Hub id,
  which is no folder to write into."""
  if os.path.isdir(init):
    return os.path.join(init, 'finetune')
  return os.path.join('finetune', init.replace('/', '--'))


def main(argv):
  del argv
  cli.use_compilation_cache()
  args = flags.FLAGS
  out = cli.output_dir(args.out or default_out(args.init), '--out')
  summary = run(args, out)
  print('\n'.join(paper_table({args.init: summary})) + f'\n(wrote {out})')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['init'])
