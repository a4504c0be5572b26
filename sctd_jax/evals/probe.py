"""Layer-wise linear probing: paper section 2.2 (Figure 4) and section 4.4 (Figure 8).

  python -m sctd_jax.evals.probe --init RUN [--init RUN2 ...] --out DIR \
      [--data past_present.txt ...] [--pooling mean|cls] [--max_length 64]

Each init (a training workdir or an HF BERT folder) encodes every sentence on
the full path, which the paper probes for token-dropping models too. Each
layer's pooled sentence vectors train a logistic regression (SentEval's
protocol: standardised features, C chosen on the dev split) whose test
accuracy is that layer's score.

Tasks: Tense (3 classes) and SubjNum (2) of Figure 4 on the synthetic
grammar's sentences, or SentEval probing files (`--data`, lines
`split<TAB>label<TAB>sentence`, split tr/va/te, as `past_present.txt` and
`subj_number.txt`), each task named by its file's stem.

Writes DIR/probe.json, {task: {"1": accuracy, ..., "L": accuracy},
"test_examples": {task: n}} with layers numbered from 1 as in the figures,
and DIR/probe.png; with several
inits, DIR/<name>/probe.json for each and one DIR/probe.png comparing them.
"""

import functools
import os
from typing import NamedTuple

from absl import flags
from absl import logging
import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
import tqdm

from sctd_jax import cli
from sctd_jax.data import synthetic
from sctd_jax.evals import plots
from sctd_jax.hf import load as hf_load
from sctd_jax import metrics_log
from sctd_jax import representations

SPLITS = ('tr', 'va', 'te')  # SentEval's train, dev and test.
# Disjoint seeds, so the splits are independent draws of the grammar.
SYNTHETIC_SPLITS = {'tr': (1001, 3000), 'va': (1002, 500), 'te': (1003, 1000)}
SYNTHETIC_TASKS = {'tense': 'tense', 'subj_num': 'subject_number'}
C_GRID = (0.01, 0.1, 1.0, 10.0)
BATCH_SIZE = 128


class ProbeError(cli.UserError):
  """Probing data or flags that cannot be used; the message names them."""


class Split(NamedTuple):
  texts: list[str]
  labels: list[str]


def synthetic_tasks() -> dict[str, dict[str, Split]]:
  """Tense and SubjNum (Figure 4) of sentences from the synthetic grammar."""
  sentences = {split: synthetic.labelled_sentences(seed, count)
               for split, (seed, count) in SYNTHETIC_SPLITS.items()}
  return {task: {split: Split([s.text for s in xs], [getattr(s, field) for s in xs])
                 for split, xs in sentences.items()}
          for task, field in SYNTHETIC_TASKS.items()}


def read_senteval(path: str) -> dict[str, Split]:
  """The tr/va/te splits of a SentEval probing file."""
  if not os.path.isfile(path):
    raise ProbeError(f'{path}: no such file.')
  splits = {split: Split([], []) for split in SPLITS}
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      fields = line.rstrip('\r\n').split('\t', 2)
      if len(fields) != 3 or fields[0] not in splits or not fields[1] or not fields[2].strip():
        raise ProbeError(f'{path} line {number}: expected split<TAB>label<TAB>sentence '
                         f'with split one of {"/".join(SPLITS)}, got {line[:80]!r}.')
      splits[fields[0]].texts.append(fields[2])
      splits[fields[0]].labels.append(fields[1])
  missing = [split for split in SPLITS if not splits[split].texts]
  if len(missing) == len(SPLITS):
    raise ProbeError(f'{path}: no lines; expected split<TAB>label<TAB>sentence.')
  if missing:
    raise ProbeError(f'{path}: no sentences in split {", ".join(missing)}; a probing '
                     f'file needs all of {"/".join(SPLITS)}.')
  if len(set(splits['tr'].labels)) < 2:
    raise ProbeError(f'{path}: split tr has one label only; a probe needs two or more.')
  return splits


def load_tasks(paths: list[str] | None) -> dict[str, dict[str, Split]]:
  """The SentEval files at `paths` by file stem, or the built-in tasks."""
  if not paths:
    return synthetic_tasks()
  names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  if len(set(names)) < len(names):
    raise ProbeError(f'--data files must have distinct names (their tasks): {paths}.')
  return {name: read_senteval(path) for name, path in zip(names, paths)}


def encode(model, params, tokenizer, texts: list[str], pooling: str,
           max_length: int) -> np.ndarray:
  """[num_layers, N, d] sentence vectors of `texts` on the full path. Every
  batch is padded to BATCH_SIZE rows, so the encoder compiles once."""
  if max_length > model.cfg.max_position_embeddings:
    raise ProbeError(f'--max_length={max_length} exceeds the model\'s '
                     f'{model.cfg.max_position_embeddings} positions.')
  encoder = jax.jit(functools.partial(representations.layer_vectors, model,
                                      pooling=pooling))
  tokens = tokenizer(texts, padding='max_length', truncation=True,
                     max_length=max_length, return_tensors='np')
  pad = -len(texts) % BATCH_SIZE
  arrays = [np.pad(tokens[key], ((0, pad), (0, 0)))
            for key in ('input_ids', 'token_type_ids', 'attention_mask')]
  vectors = [np.asarray(encoder(params, *(a[i:i + BATCH_SIZE] for a in arrays)))
             for i in range(0, len(texts) + pad, BATCH_SIZE)]
  return np.concatenate(vectors, axis=1)[:, :len(texts)]


def probe_layer(features: dict[str, np.ndarray], labels: dict[str, list[str]]) -> float:
  """Test accuracy of a logistic regression on standardised features, with
  the C of best dev accuracy."""
  scaler = StandardScaler().fit(features['tr'])
  tr, va, te = (scaler.transform(features[split]) for split in SPLITS)
  # Each C starts from the previous (smaller) C's solution: fewer iterations.
  fit = LogisticRegression(max_iter=1000, warm_start=True)
  best_dev, test = -1.0, 0.0
  for c in C_GRID:
    fit.set_params(C=c).fit(tr, labels['tr'])
    dev = fit.score(va, labels['va'])
    if dev > best_dev:
      best_dev, test = dev, fit.score(te, labels['te'])
  return float(test)


def probe(model, params, tokenizer, tasks: dict[str, dict[str, Split]],
          pooling: str = 'mean', max_length: int = 64) -> dict[str, dict[str, float]]:
  """{task: {layer (from "1"): test accuracy}}."""
  # Tasks may share sentences (the built-in ones do): each is encoded once.
  texts = list(dict.fromkeys(t for task in tasks.values() for s in task.values()
                             for t in s.texts))
  vectors = encode(model, params, tokenizer, texts, pooling, max_length)
  row = {text: i for i, text in enumerate(texts)}
  num_layers = vectors.shape[0]
  results = {}
  with tqdm.tqdm(total=len(tasks) * num_layers, unit='probe', dynamic_ncols=True,
                 disable=None) as bar:   # None: off unless a terminal; then log lines
    for name, task in tasks.items():
      index = {split: [row[t] for t in s.texts] for split, s in task.items()}
      labels = {split: s.labels for split, s in task.items()}
      results[name] = {}
      for layer in range(num_layers):
        bar.set_description(f'{name} layer {layer + 1}')
        features = {split: vectors[layer, i] for split, i in index.items()}
        results[name][str(layer + 1)] = probe_layer(features, labels)
        bar.update()
      if bar.disable:
        logging.info('Probed %s: test accuracy %.3f at the last of %d layers.', name,
                     results[name][str(num_layers)], num_layers)
  return results


def format_table(result: dict[str, dict[str, float]]) -> str:
  """Accuracies as a text table: a row per task, a column per layer."""
  layers = list(next(iter(result.values())))
  width = max(len(task) for task in result)
  lines = [' '.join([f'{"layer":<{width}}', *(f'{l:>6}' for l in layers)])]
  lines += [' '.join([f'{task:<{width}}', *(f'{acc[l]:6.3f}' for l in layers)])
            for task, acc in result.items()]
  return '\n'.join(lines)


def define_flags() -> None:
  flags.DEFINE_multi_string(
      'init', None, 'Training workdir or HF BERT folder to probe; repeat to compare runs.')
  flags.DEFINE_string('out', None, 'Directory for probe.json and probe.png.')
  flags.DEFINE_multi_string(
      'data', None, 'SentEval probing file (split<TAB>label<TAB>sentence); repeat '
      'for more tasks. Default: the built-in tense and subj_num tasks.')
  flags.DEFINE_enum('pooling', 'mean', representations.POOLINGS,
                    'Sentence vector of a layer: mean over tokens or [CLS].')
  flags.DEFINE_integer('max_length', 64, 'Tokens per sentence (padded, truncated).')


def main(argv):
  del argv
  args = flags.FLAGS
  inits, out = args.init, cli.output_dir(args.out, '--out')
  results = {}
  tasks = load_tasks(args.data)
  test_examples = {task: len(splits['te'].texts) for task, splits in tasks.items()}
  for name, path in zip(plots.run_names(inits), inits):
    model, params, tokenizer = hf_load.load_pretrained(path)
    results[name] = probe(model, params, tokenizer, tasks, args.pooling,
                          args.max_length)
    logging.info('Probe test accuracy of %s:\n%s', path, format_table(results[name]))
    # Written as soon as known, so a later init's failure keeps this one.
    folder = os.path.join(out, name) if len(inits) > 1 else out
    metrics_log.write_json(os.path.join(folder, 'probe.json'),
                           dict(results[name], test_examples=test_examples))
  plots.probe_curves(results, os.path.join(out, 'probe.png'), test_examples)
  print(f'Wrote the probe results of {len(results)} run(s) to {out}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['init', 'out'])
