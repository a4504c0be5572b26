"""Batches for the train loop: blocks of a corpus, dynamically masked on the host.

The corpora and their packing live in `sources`, the tokenizer in
`tokenizer`. Global sample `p` of a split is block `p` of its source, masked
with an RNG keyed by (seed, split, p), all in NumPy (docs/design.md section 6). So
the global batch at a position is the same whatever the number of processes,
each process builds only its own rows, and the position is the iterator's
whole state: resuming there continues with exactly the next batch.
"""

import itertools
import queue
import threading
import time
from typing import Iterator

import jax
import numpy as np
import tokenizers

from sctd_jax import config as config_lib
from sctd_jax.data.sources import make_source
from sctd_jax.data.sources import SPLITS


def continues_word(tokenizer) -> np.ndarray:
  """continues[id]: token `id` continues a word ('##ing' of WordPiece)."""
  model = tokenizer.backend_tokenizer.model
  if not isinstance(model, tokenizers.models.WordPiece):
    raise config_lib.ConfigError(
        'config key data.whole_word_masking=True needs a WordPiece tokenizer '
        f'(word pieces marked by a prefix); this one is {type(model).__name__}.')
  prefix = model.continuing_subword_prefix
  pieces = tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
  return np.array([p.startswith(prefix) for p in pieces])


class Masker:
  """BERT's dynamic masking: ~`probability` of the non-special tokens of each
  sequence, at most `max_predictions`, become targets; of those 80% are
  replaced by [MASK], 10% by a random non-special token, 10% left as is.

  With `whole_word`, whole words are drawn (all their pieces or none), as
  BERT's whole-word masking; a row then gets up to one word fewer targets
  than the rate asks, as words are drawn until the next one does not fit."""

  def __init__(self, tokenizer, probability: float, max_predictions: int,
               whole_word: bool = False):
    self.probability = probability
    self.max_predictions = max_predictions
    self.mask_id = tokenizer.mask_token_id
    self.special = np.asarray(sorted(set(tokenizer.all_special_ids)))
    self.random_ids = np.setdiff1d(np.arange(len(tokenizer)), self.special)
    self.continues = (continues_word(tokenizer) if whole_word
                      else np.zeros(len(tokenizer), bool))

  def __call__(self, input_ids: np.ndarray, rngs: list[np.random.Generator]) -> dict:
    """Masks row i of `input_ids` with `rngs[i]` alone."""
    (batch, length), num_preds = input_ids.shape, self.max_predictions
    uniform = np.stack([rng.random(length + 2 * num_preds) for rng in rngs])
    keys, draw, pick = np.split(uniform, [length, length + num_preds], axis=1)
    rows = np.arange(batch)[:, None]

    maskable = ~np.isin(input_ids, self.special)
    follows = np.pad(maskable[:, :-1], ((0, 0), (1, 0)))
    word = np.cumsum(maskable & ~(self.continues[input_ids] & follows), axis=1)
    # One random key per word; a stable sort by it lists the words in random
    # order, each word's pieces together.
    keys = np.where(maskable, keys[rows, np.maximum(word - 1, 0)], 2.0)
    order = np.argsort(keys, axis=1, kind='stable')
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(length)[None], axis=1)
    n = np.minimum(num_preds, np.maximum(
        1, np.round(maskable.sum(1) * self.probability).astype(np.int64)))
    # The targets: the words whose last piece ranks below n.
    last = np.zeros((batch, length + 1), np.int64)
    np.maximum.at(last, (np.broadcast_to(rows, word.shape), word), np.where(maskable, rank, 0))
    count = (maskable & (last[rows, word] < n[:, None])).sum(1)

    positions = order[:, :num_preds]
    weights = np.arange(num_preds)[None, :] < count[:, None]
    positions = np.where(weights, positions, 0)
    labels = np.where(weights, input_ids[rows, positions], 0)
    random_ids = self.random_ids[(pick * len(self.random_ids)).astype(np.int64)]
    replaced = np.where(draw < 0.8, self.mask_id, np.where(draw < 0.9, random_ids, labels))
    masked = input_ids.copy()
    masked[rows, positions] = np.where(weights, replaced, masked[rows, positions])
    return dict(input_ids=masked, mlm_positions=positions.astype(np.int32),
                mlm_ids=labels.astype(np.int32),
                mlm_weights=weights.astype(np.float32))


def unigram_entropy(source, num_blocks: int = 200) -> float:
  """Entropy (nats) of the token distribution of the source's first blocks:
  the loss of a model that ignores context; MLM loss below it is learnt from
  context."""
  ids = np.concatenate([source.block(i) for i in range(num_blocks)])
  ids = ids[~np.isin(ids, source.tokenizer.all_special_ids)]
  p = np.bincount(ids) / ids.size
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def make_batch(source, masker: Masker, samples: range, seed: int) -> dict:
  """The rows of global samples `samples`."""
  ids = np.stack([source.block(p) for p in samples])
  batch = masker(ids, [np.random.default_rng([seed, SPLITS[source.split], p]) for p in samples])
  batch['attention_mask'] = (ids != source.tokenizer.pad_token_id).astype(np.int32)
  batch['token_type_ids'] = np.zeros_like(ids)
  return batch


def _local_batches(config, tokenizer, split: str, position: int,
                   process_index: int | None, process_count: int | None) -> Iterator[dict]:
  """This process's rows of the global batches from `position` on."""
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  size = config.train.batch_size
  if size % count:
    raise config_lib.ConfigError(f'config key train.batch_size={size} must divide '
                                 f'evenly among {count} processes.')
  local = size // count
  source = make_source(config, tokenizer, split)
  masker = Masker(tokenizer, config.data.mlm_probability, config.data.max_predictions,
                  config.data.whole_word_masking)
  for start in itertools.count(position + index * local, size):
    yield make_batch(source, masker, range(start, start + local), config.seed)


def batches(config, tokenizer, split: str = 'train', position: int = 0,
            process_index: int | None = None, process_count: int | None = None
            ) -> Iterator[dict]:
  """Batches of `split` from global sample `position` on: this process's rows
  (train.batch_size / process_count of them, the process_index-th slice of
  each global batch; both default to JAX's), built ahead in a thread so the
  accelerator does not wait on the host. The source is opened (and a corpus
  tokenized, once) before this returns, so its errors surface here."""
  local = _local_batches(config, tokenizer, split, position, process_index, process_count)
  first = next(local)
  return prefetch(itertools.chain([first], local), config.data.prefetch)


def measure_throughput(config, tokenizer, num_batches: int = 20, split: str = 'train') -> float:
  """Tokens (batch_size x seq_len slots) per second the pipeline produces on
  one process, without a model and without the prefetch thread; the corpus
  is opened (and tokenized, if not cached) before the clock starts."""
  local = _local_batches(config, tokenizer, split, 0, 0, 1)
  next(local)
  started = time.perf_counter()
  for _ in range(num_batches):
    next(local)
  elapsed = time.perf_counter() - started
  return num_batches * config.train.batch_size * config.data.seq_len / elapsed


def prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its errors."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def work():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # Surfaced in the consumer's thread.
      q.put(e)

  threading.Thread(target=work, daemon=True).start()
  while (item := q.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item
