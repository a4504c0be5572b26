"""SQuAD v1.1 and v2.0 fine-tuning (paper Table 3; Appendix A.2):

  python -m sctd_jax.evals.squad --init PRETRAINED --train_file train-v2.0.json \
      --dev_file dev-v2.0.json --out OUT

PRETRAINED is a pretraining workdir, an HF BERT folder or a Hub id; the files
are the official SQuAD JSON (v2.0 when a question has `is_impossible`).
A span head (one linear layer giving start and end logits per token, as HF's
BertForQuestionAnswering) is trained on windows of `max_length` 384 tokens
moved by `doc_stride` 128 over the context, at Table 7's learning rate 3e-5,
batch 12, 2 epochs. Answers are the best-scoring span of at most
`max_answer_length` tokens in any window, mapped back to the context's
characters by the tokenizer's offsets. For v2.0 the no-answer threshold on
(null score - best span score) is chosen on the dev set, as the official
script's best_f1_thresh. OUT holds predictions.json in the official format
({id: answer}), null_odds.json for v2.0 and eval_results.json (mean over
seeds, `std`, `per_seed`; exact_match and f1 in %).
"""

import dataclasses
import json
import os

from absl import flags
from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sctd_jax import cli
from sctd_jax.evals import finetune
from sctd_jax.evals import squad_metrics
from sctd_jax.evals import tasks
from sctd_jax.hf import format as hf_format
from sctd_jax.hf import load as hf_load
from sctd_jax import metrics_log
from sctd_jax import models

INPUT_KEYS = finetune.INPUT_KEYS


@dataclasses.dataclass(frozen=True)
class Example:
  qid: str
  question: str
  context: str
  answers: tuple[str, ...]        # Gold texts; () for an unanswerable question.
  answer_start: int               # Character offset of the first answer; -1: none.


def read_squad(path: str) -> tuple[list[Example], bool]:
  """The examples of an official SQuAD JSON file, and whether it is v2.0."""
  if not os.path.isfile(path):
    raise hf_format.FormatError(f'{path} not found (a SQuAD JSON file).')
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise hf_format.FormatError(f'{path} is not SQuAD JSON ({e}).') from None
  if not isinstance(data, dict) or 'data' not in data:
    raise hf_format.FormatError(f'{path} is not SQuAD JSON: it has no "data" list.')
  examples, v2 = [], False
  try:
    for article in data['data']:
      for paragraph in article['paragraphs']:
        for qa in paragraph['qas']:
          v2 = v2 or 'is_impossible' in qa
          answers = [] if qa.get('is_impossible') else qa['answers']
          examples.append(Example(
              qa['id'], qa['question'], paragraph['context'],
              tuple(a['text'] for a in answers),
              answers[0]['answer_start'] if answers else -1))
  except (KeyError, TypeError, IndexError, AttributeError) as e:
    raise hf_format.FormatError(
        f'{path} is not SQuAD JSON: an article, paragraph or question lacks a '
        f'field or has one of the wrong type ({type(e).__name__}: {e}).') from None
  return examples, v2


def make_features(tokenizer, examples: list[Example], max_length: int,
                  doc_stride: int) -> dict:
  """Windows over each context: `input_ids` etc. [F, max_length], `example`
  (its example's index), `offsets` [F, max_length, 2] (character span of each
  context token, -1 elsewhere) and `label` [F, 2], the answer's first and
  last token, (0, 0) ([CLS]) when the window does not hold the whole answer
  or there is none."""
  encoded = tokenizer(
      [e.question for e in examples], [e.context for e in examples],
      truncation='only_second', max_length=max_length, stride=doc_stride,
      return_overflowing_tokens=True, return_offsets_mapping=True,
      padding='max_length', return_token_type_ids=True)
  features = {key: np.asarray(encoded[key], np.int32) for key in INPUT_KEYS}
  features['example'] = np.asarray(encoded['overflow_to_sample_mapping'])
  offsets = np.full((len(features['example']), max_length, 2), -1, np.int64)
  labels = np.zeros((len(features['example']), 2), np.int32)
  for i, example_index in enumerate(features['example']):
    in_context = np.asarray([s == 1 for s in encoded.sequence_ids(i)])
    offsets[i][in_context] = np.asarray(encoded['offset_mapping'][i])[in_context]
    example = examples[example_index]
    if example.answer_start < 0:
      continue
    start = example.answer_start
    end = start + len(example.answers[0])
    tokens = np.flatnonzero(in_context)
    if offsets[i, tokens[0], 0] <= start and offsets[i, tokens[-1], 1] >= end:
      labels[i] = (tokens[offsets[i, tokens, 0] <= start][-1],
                   tokens[offsets[i, tokens, 1] >= end][0])
  features['offsets'], features[tasks.LABEL] = offsets, labels
  return features


class BertForQuestionAnswering(nn.Module):
  """HF's BertForQuestionAnswering: start and end logits [B, S] from one
  linear layer on the last hidden states; padding gets -inf-like logits."""
  cfg: models.BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic=True):
    x, _, _ = models.BertModel(self.cfg, name='bert')(
        input_ids, token_type_ids, attention_mask, None, deterministic)
    logits = nn.Dense(2, kernel_init=nn.initializers.normal(self.cfg.initializer_range),
                      name='qa_outputs')(x).astype(jnp.float32)
    logits = jnp.where(attention_mask[..., None] > 0, logits, -1e4)
    return logits[..., 0], logits[..., 1]


def span_loss(start_logits, end_logits, labels):
  """Mean of the start and end cross-entropies, as HF's."""
  xent = optax.softmax_cross_entropy_with_integer_labels
  return 0.5 * (xent(start_logits, labels[:, 0]) + xent(end_logits, labels[:, 1])).mean()


def make_train_step(model: BertForQuestionAnswering):
  def train_step(state, batch, key):
    def loss_fn(params):
      start, end = model.apply({'params': params}, *(batch[k] for k in INPUT_KEYS),
                               deterministic=False,
                               rngs={'dropout': jax.random.fold_in(key, state.step)})
      return span_loss(start, end, batch[tasks.LABEL])
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
  return jax.jit(train_step, donate_argnums=0)


def span_logits(model, params, features: dict, batch_size: int):
  """Start and end logits [F, S] of every window, in fixed-shape batches."""
  predict = jax.jit(lambda p, b: model.apply({'params': p}, *(b[k] for k in INPUT_KEYS)))
  n, starts, ends = len(features['example']), [], []
  for first in range(0, n, batch_size):
    pad = lambda x: np.pad(x, [(0, max(0, first + batch_size - n)), (0, 0)])
    start, end = predict(params, {k: pad(features[k][first:first + batch_size])
                                  for k in INPUT_KEYS})
    starts.append(np.asarray(start))
    ends.append(np.asarray(end))
  return np.concatenate(starts)[:n], np.concatenate(ends)[:n]


def best_answers(examples: list[Example], features: dict, start_logits, end_logits,
                 n_best: int = 20, max_answer_length: int = 30):
  """({qid: text of the best span}, {qid: null odds}): the highest
  start + end score over every window's `n_best` starts and ends that lie in
  the context, end >= start, at most `max_answer_length` tokens; the null
  odds are the lowest [CLS] score of its windows minus that best score."""
  answers, null_odds = {}, {}
  for index, example in enumerate(examples):
    best, best_text, null = -np.inf, '', np.inf
    for f in np.flatnonzero(features['example'] == index):
      s, e, offsets = start_logits[f], end_logits[f], features['offsets'][f]
      null = min(null, s[0] + e[0])
      for i in np.argsort(s)[::-1][:n_best]:
        for j in np.argsort(e)[::-1][:n_best]:
          if (offsets[i, 0] < 0 or offsets[j, 0] < 0 or j < i or
              j - i + 1 > max_answer_length or s[i] + e[j] <= best):
            continue
          best, best_text = s[i] + e[j], example.context[offsets[i, 0]:offsets[j, 1]]
    answers[example.qid] = best_text
    null_odds[example.qid] = float(null - best) if np.isfinite(best) else float('inf')
  return answers, null_odds


def score(examples, answers, null_odds, v2: bool):
  """(scores, final answers): official EM/F1; for v2.0 with the no-answer
  threshold chosen on these examples for F1."""
  golds = {e.qid: list(e.answers) for e in examples}
  if not v2:
    return squad_metrics.evaluate(answers, golds), answers
  chosen = squad_metrics.evaluate(answers, golds, null_odds)
  final = squad_metrics.apply_threshold(answers, null_odds, chosen['best_f1_thresh'])
  scores = squad_metrics.evaluate(final, golds)
  return {**scores, 'best_f1_thresh': chosen['best_f1_thresh']}, final


def run(args, out: str) -> dict:
  """Fine-tunes `args.init` on the train file for each seed, scores the dev
  file and writes OUT's files; returns eval_results."""
  cli.output_dir(out, '--out')
  if args.max_length <= args.doc_stride + 8:
    raise cli.UserError(f'--doc_stride={args.doc_stride} must be well below '
                        f'--max_length={args.max_length} (the windows overlap by it).')
  mlm, pretrained, tokenizer = hf_load.load_pretrained(args.init)
  if args.max_length > mlm.cfg.max_position_embeddings:
    raise cli.UserError(f'--max_length={args.max_length} exceeds the '
                        f'{mlm.cfg.max_position_embeddings} positions of {args.init}.')
  train_examples, _ = read_squad(args.train_file)
  dev_examples, v2 = read_squad(args.dev_file)
  train = make_features(tokenizer, train_examples, args.max_length, args.doc_stride)
  dev = make_features(tokenizer, dev_examples, args.max_length, args.doc_stride)
  t = finetune.epochs_config(args.learning_rate, args.batch_size, args.num_epochs,
                             len(train['example']))
  cfg = finetune.encoder_config(mlm.cfg, 0.1)
  model = BertForQuestionAnswering(cfg)
  train_step, optimizer = make_train_step(model), finetune.make_optimizer(t)
  bert_params = jax.device_get(pretrained['bert'])
  train_arrays = {k: train[k] for k in (*INPUT_KEYS, tasks.LABEL)}
  runs = []
  os.makedirs(out, exist_ok=True)
  for seed in range(args.seed, args.seed + args.num_seeds):
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    state = train_state.TrainState.create(
        apply_fn=model.apply, tx=optimizer,
        params=finetune.init_params(model, bert_params, init_key))
    state = state.replace(step=jnp.zeros((), jnp.int32))
    state = finetune.train(train_step, state,
                           finetune.train_batches(train_arrays, t.batch_size, seed),
                           dropout_key, t, f'squad seed {seed}')
    start, end = span_logits(model, state.params, dev, args.eval_batch_size)
    answers, null_odds = best_answers(dev_examples, dev, start, end,
                                      max_answer_length=args.max_answer_length)
    scores, final = score(dev_examples, answers, null_odds, v2)
    logging.info('squad seed %d: %s', seed, scores)
    if not runs:
      metrics_log.write_json(os.path.join(out, 'predictions.json'), final)
      if v2:
        metrics_log.write_json(os.path.join(out, 'null_odds.json'), null_odds)
    runs.append(scores)
  results = finetune.summarize('squad_v2' if v2 else 'squad_v1', args.init, runs)
  metrics_log.write_json(os.path.join(out, 'eval_results.json'), results)
  return results


def define_flags() -> None:
  flags.DEFINE_string('init', None, 'Pretraining workdir, HF BERT folder or Hub id.')
  flags.DEFINE_string('train_file', None, 'Official SQuAD JSON training file.')
  flags.DEFINE_string('dev_file', None, 'Official SQuAD JSON dev file (scored).')
  flags.DEFINE_string('out', None, 'Directory for predictions and scores.')
  flags.DEFINE_integer('max_length', 384, 'Tokens per window (paper: 384).')
  flags.DEFINE_integer('doc_stride', 128, 'Tokens the windows overlap by.')
  flags.DEFINE_integer('max_answer_length', 30, 'Longest answer, in tokens.')
  flags.DEFINE_float('learning_rate', 3e-5, 'Peak learning rate (Table 7: 3e-5).')
  flags.DEFINE_integer('batch_size', 12, 'Windows per step (Table 7: 12).')
  flags.DEFINE_float('num_epochs', 2.0, 'Epochs over the windows (Table 7: 2).')
  flags.DEFINE_integer('eval_batch_size', 64, 'Windows per prediction batch.')
  flags.DEFINE_integer('seed', 0, 'First seed.')
  flags.DEFINE_integer('num_seeds', 1, 'Seeds seed, seed+1, ...; the paper averages 5.')


def main(argv):
  del argv
  cli.use_compilation_cache()
  results = run(flags.FLAGS, flags.FLAGS.out)
  print(f"{results['task']}: exact_match {results['exact_match']:.2f}, "
        f"f1 {results['f1']:.2f} (wrote {flags.FLAGS.out}).")


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['init', 'train_file', 'dev_file', 'out'])
