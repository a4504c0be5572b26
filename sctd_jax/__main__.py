"""`python -m sctd_jax`: the commands, one line each (as `git help`).

Each runs as `python -m sctd_jax.<command>`; `--help` lists its flags. The
order is the quickstart's (docs/quickstart.md).
"""

import sys

COMMANDS = (
    ('train', 'pretrain (baseline, token dropping or SCTD) into a workdir; '
     'rerun to resume'),
    ('export', "write a workdir's checkpoint as a Hugging Face BERT folder"),
    ('evals.finetune', 'fine-tune on a GLUE, SuperGLUE or built-in task'),
    ('evals.probe', 'layer-wise linear probing (tense, subject number)'),
    ('evals.report', 'compare runs: losses, drift, probing, fine-tuning'),
    ('evals.seeds', 'compare variants across seeds, with paired 95% intervals'),
    ('evals.suites', "run a paper table's tasks (GLUE, SuperGLUE, SQuAD) over seeds"),
    ('evals.squad', 'fine-tune and score SQuAD v1.1 or v2.0'),
    ('evals.ner', 'few-shot named-entity recognition (CoNLL files)'),
    ('bench', 'time a train step of the three methods on one shape'),
    ('data.tokenizer', 'fit a WordPiece tokenizer on a corpus'),
)


def usage() -> str:
  width = max(len(name) for name, _ in COMMANDS)
  return '\n'.join([
      'usage: python -m sctd_jax.<command> [flags]    (--help lists its flags)',
      '', 'Commands:',
      *(f'  {name:<{width}}  {what}' for name, what in COMMANDS),
      '', 'Start with: python -m sctd_jax.train --config configs/tiny.py '
      '--workdir runs/tiny',
      'The first hour, command by command: docs/quickstart.md'])


if __name__ == '__main__':
  if sys.argv[1:] in ([], ['-h'], ['--help'], ['help']):
    print(usage())
  else:
    sys.exit(f'{usage()}\n\nerror: run a command as python -m '
             f'sctd_jax.<command>, not python -m sctd_jax {" ".join(sys.argv[1:])}.')
