"""Few-shot named entity recognition (paper Tables 1 and 6: 32-shot CoNLL03
and OntoNotes 5.0):

  python -m sctd_jax.evals.ner --init PRETRAINED --train_file train.txt \
      --dev_file dev.txt --out OUT [--shots 32] [--num_seeds 5]

The files are in CoNLL column format (a token per line, its BIO tag in the
last column, a blank line between sentences, -DOCSTART- lines skipped). Each
seed draws its own k-shot training set from the train file (`sample_shots`)
and trains a token-classification head (a linear layer on each word's first
sub-token, as HF's BertForTokenClassification); the score is entity-level
micro F1 over BIO chunks on the dev file, as conlleval and seqeval count it.
OUT/eval_results.json holds the mean over seeds, `std` and `per_seed`.
"""

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
from sctd_jax.evals import tasks
from sctd_jax.hf import format as hf_format
from sctd_jax.hf import load as hf_load
from sctd_jax import metrics_log
from sctd_jax import models

INPUT_KEYS = finetune.INPUT_KEYS
IGNORE = -1   # Label of sub-tokens after a word's first, specials and padding.

Sentence = tuple[tuple[str, ...], tuple[str, ...]]   # (words, tags)


def read_conll(path: str) -> list[Sentence]:
  """(words, tags) of every sentence of a CoNLL column file."""
  if not os.path.isfile(path):
    raise hf_format.FormatError(f'{path} not found (a CoNLL column file).')
  sentences, words, tags = [], [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      columns = line.split()
      if columns and columns[0] != '-DOCSTART-':
        if len(columns) < 2:
          raise hf_format.FormatError(f'{path}:{number}: a token line needs its '
                                      'tag in the last column.')
        words.append(columns[0])
        tags.append(columns[-1])
      elif words:
        sentences.append((tuple(words), tuple(tags)))
        words, tags = [], []
  if words:
    sentences.append((tuple(words), tuple(tags)))
  return sentences


def entities(tags) -> set[tuple[str, int, int]]:
  """(type, first, last) of each BIO chunk; an I- tag that does not continue
  a chunk of its type starts one, as conlleval counts it."""
  chunks, current = set(), None
  for i, tag in enumerate((*tags, 'O')):
    prefix, _, kind = tag.partition('-')
    if current and (prefix != 'I' or kind != current[0]):
      chunks.add((current[0], current[1], i - 1))
      current = None
    if prefix == 'B' or (prefix == 'I' and current is None):
      current = (kind, i)
  return chunks


def entity_f1(gold: list, predicted: list) -> float:
  """Micro F1 over the entities of all sentences."""
  found = correct = total = 0
  for g, p in zip(gold, predicted):
    g, p = entities(g), entities(p)
    found, total, correct = found + len(p), total + len(g), correct + len(g & p)
  return 2 * correct / (found + total) if found + total else 0.0


def sample_shots(sentences: list[Sentence], k: int, seed: int) -> list[Sentence]:
  """The k-shot training set of `seed`: sentences in a seeded random order,
  each kept if it has an entity of a type still short of k mentions, until
  every type has k (greedy sampling, as in few-shot NER benchmarks)."""
  kinds = sorted({kind for _, tags in sentences for kind, _, _ in entities(tags)})
  counts = dict.fromkeys(kinds, 0)
  chosen = []
  for i in np.random.default_rng(seed).permutation(len(sentences)):
    found = [kind for kind, _, _ in entities(sentences[i][1])]
    if any(counts[kind] < k for kind in found):
      chosen.append(sentences[i])
      for kind in found:
        counts[kind] += 1
    if all(c >= k for c in counts.values()):
      break
  return chosen


def encode(tokenizer, sentences: list[Sentence], labels: list[str],
           max_length: int) -> dict:
  """Arrays [N, max_length]; `label` holds the tag index on each word's first
  sub-token, IGNORE elsewhere; `word` that word's index (-1 elsewhere)."""
  encoded = tokenizer([list(words) for words, _ in sentences], is_split_into_words=True,
                      truncation=True, max_length=max_length, padding='max_length',
                      return_token_type_ids=True)
  arrays = {key: np.asarray(encoded[key], np.int32) for key in INPUT_KEYS}
  index = {tag: i for i, tag in enumerate(labels)}
  word = np.full(arrays['input_ids'].shape, -1, np.int32)
  label = np.full(arrays['input_ids'].shape, IGNORE, np.int32)
  for n, (_, tags) in enumerate(sentences):
    previous = None
    for position, w in enumerate(encoded.word_ids(n)):
      if w is not None and w != previous:
        word[n, position] = w
        label[n, position] = index.get(tags[w], index['O'])
      previous = w
  arrays['word'], arrays[tasks.LABEL] = word, label
  return arrays


class BertForTokenClassification(nn.Module):
  """HF's BertForTokenClassification: a linear layer on every hidden state."""
  cfg: models.BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic=True):
    x, _, _ = models.BertModel(self.cfg, name='bert')(
        input_ids, token_type_ids, attention_mask, None, deterministic)
    x = nn.Dropout(self.cfg.dropout_rate)(x, deterministic=deterministic)
    return nn.Dense(self.num_labels, name='classifier', kernel_init=nn.initializers.normal(
        self.cfg.initializer_range))(x).astype(jnp.float32)


def token_loss(logits, labels):
  """Cross-entropy averaged over the labelled (first sub-token) positions."""
  weights = (labels != IGNORE).astype(jnp.float32)
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  return jnp.sum(xent * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_train_step(model):
  def train_step(state, batch, key):
    def loss_fn(params):
      logits = model.apply({'params': params}, *(batch[k] for k in INPUT_KEYS),
                           deterministic=False,
                           rngs={'dropout': jax.random.fold_in(key, state.step)})
      return token_loss(logits, batch[tasks.LABEL])
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
  return jax.jit(train_step, donate_argnums=0)


def predict_tags(model, params, arrays: dict, sentences: list[Sentence],
                 labels: list[str], batch_size: int) -> list[list[str]]:
  """Each word's predicted tag; words cut off by max_length get 'O'."""
  predict = jax.jit(lambda p, b: model.apply({'params': p}, *(b[k] for k in INPUT_KEYS)))
  n, best = len(sentences), []
  for first in range(0, n, batch_size):
    pad = lambda x: np.pad(x, [(0, max(0, first + batch_size - n)), (0, 0)])
    batch = {k: pad(arrays[k][first:first + batch_size]) for k in INPUT_KEYS}
    best.append(np.asarray(predict(params, batch)).argmax(-1))
  best = np.concatenate(best)[:n]
  tags = [['O'] * len(words) for words, _ in sentences]
  for s, position in zip(*np.nonzero(arrays['word'] >= 0)):
    tags[s][arrays['word'][s, position]] = labels[best[s, position]]
  return tags


def run(args, out: str) -> dict:
  """k-shot fine-tuning of `args.init` for each seed, scored on the dev file."""
  cli.output_dir(out, '--out')
  train_sentences = read_conll(args.train_file)
  dev = read_conll(args.dev_file)
  if not any(entities(tags) for _, tags in train_sentences):
    raise hf_format.FormatError(f'--train_file={args.train_file} has no entity (no B-/I- '
                                'tags); the shots are drawn from entity mentions.')
  if not dev:
    raise hf_format.FormatError(f'--dev_file={args.dev_file} has no sentences.')
  mlm, pretrained, tokenizer = hf_load.load_pretrained(args.init)
  labels = sorted({t for _, tags in train_sentences + dev for t in tags} | {'O'})
  cfg = finetune.encoder_config(mlm.cfg, 0.1)
  model = BertForTokenClassification(cfg, len(labels))
  train_step = make_train_step(model)
  dev_arrays = encode(tokenizer, dev, labels, args.max_length)
  gold = [list(tags) for _, tags in dev]
  bert_params = jax.device_get(pretrained['bert'])
  runs = []
  for seed in range(args.seed, args.seed + args.num_seeds):
    shots = sample_shots(train_sentences, args.shots, seed)
    arrays = encode(tokenizer, shots, labels, args.max_length)
    t = finetune.epochs_config(args.learning_rate, args.batch_size, args.num_epochs,
                               len(shots))
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    state = train_state.TrainState.create(
        apply_fn=model.apply, tx=finetune.make_optimizer(t),
        params=finetune.init_params(model, bert_params, init_key))
    state = state.replace(step=jnp.zeros((), jnp.int32))
    batches = finetune.train_batches({k: arrays[k] for k in (*INPUT_KEYS, tasks.LABEL)},
                                     t.batch_size, seed)
    state = finetune.train(train_step, state, batches, dropout_key, t,
                           f'ner seed {seed}')
    predicted = predict_tags(model, state.params, dev_arrays, dev, labels,
                             args.eval_batch_size)
    runs.append({'f1': entity_f1(gold, predicted), 'train_sentences': len(shots)})
    logging.info('ner seed %d: %s', seed, runs[-1])
  results = finetune.summarize('ner', args.init, runs, shots=args.shots)
  metrics_log.write_json(os.path.join(out, 'eval_results.json'), results)
  return results


def define_flags() -> None:
  flags.DEFINE_string('init', None, 'Pretraining workdir, HF BERT folder or Hub id.')
  flags.DEFINE_string('train_file', None, 'CoNLL column file the shots are drawn from.')
  flags.DEFINE_string('dev_file', None, 'CoNLL column file scored.')
  flags.DEFINE_string('out', None, 'Directory for eval_results.json.')
  flags.DEFINE_integer('shots', 32, 'Mentions per entity type (paper: 32).')
  flags.DEFINE_integer('max_length', 128, 'Tokens per sentence.')
  flags.DEFINE_float('learning_rate', 5e-5, 'Peak learning rate.')
  flags.DEFINE_integer('batch_size', 8, 'Sentences per step.')
  flags.DEFINE_float('num_epochs', 20.0, 'Epochs over the shots.')
  flags.DEFINE_integer('eval_batch_size', 64, 'Sentences per prediction batch.')
  flags.DEFINE_integer('seed', 0, 'First seed (each seed draws its own shots).')
  flags.DEFINE_integer('num_seeds', 5, 'Seeds seed, seed+1, ...')


def main(argv):
  del argv
  cli.use_compilation_cache()
  results = run(flags.FLAGS, flags.FLAGS.out)
  print(f"ner {results['shots']}-shot: entity F1 {results['f1']:.4f} "
        f"± {results['std']['f1']:.4f} (wrote {flags.FLAGS.out}).")


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['init', 'train_file', 'dev_file', 'out'])
