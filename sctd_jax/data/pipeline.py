"""Batches for the train loop: blocks of a corpus, dynamically masked on the host.

The corpora and their packing live in `sources`, the tokenizer in
`tokenizer`. Global sample `p` of a split is block `p` of its source, masked
with an RNG keyed by (seed, split, p), all in NumPy (docs/design.md section 6). So
the global batch at a position is the same whatever the number of processes,
each process builds only its own rows, and the position is the iterator's
whole state: resuming there continues with exactly the next batch (mixtures,
`data.sources`, too). Streams (`data.streaming`) are the exception: each
process reads its own shard, and the checkpoint also keeps their states
(`Batches.checkpoint`).
"""

import itertools
import json
import queue
import threading
import time
from typing import Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np
import tokenizers

from sctd_jax import config as config_lib
from sctd_jax.data.sources import make_source
from sctd_jax.data.sources import SPLITS
from sctd_jax.data.sources import StreamSource


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


def make_batch(source, masker: Masker, samples: range, seed: int,
               blocks: range | None = None) -> dict:
  """The rows of global samples `samples`: blocks `blocks` (default: the
  same numbers) of the source, masked by the samples' numbers."""
  ids = np.stack([source.block(b) for b in (samples if blocks is None else blocks)])
  batch = masker(ids, [np.random.default_rng([seed, SPLITS[source.split], p]) for p in samples])
  batch['attention_mask'] = (ids != source.tokenizer.pad_token_id).astype(np.int32)
  batch['token_type_ids'] = np.zeros_like(ids)
  return batch


class Batches:
  """This process's rows of the global batches from a position on: an
  iterator, and `checkpoint(position)`, the JSON the checkpoint keeps.

  Global sample p is block p of the source, so the position is the whole
  state. A stream (`data.streaming`) is read per process instead: process
  i's rows are the next blocks of its own shard, and the checkpoint also
  keeps each process's stream state, so a resume needs the same process
  count (and the batches depend on it)."""

  def __init__(self, config, tokenizer, split: str, resume: dict,
               process_index: int | None, process_count: int | None):
    self.index = jax.process_index() if process_index is None else process_index
    self.count = jax.process_count() if process_count is None else process_count
    self.size = config.train.batch_size
    if self.size % self.count:
      raise config_lib.ConfigError(f'config key train.batch_size={self.size} must divide '
                                   f'evenly among {self.count} processes.')
    self.local = self.size // self.count
    streams = resume.get('streams')
    if streams is not None and len(streams) != self.count:
      raise config_lib.ConfigError(
          f'The checkpoint continues {len(streams)} streams (data.streaming) and this '
          f'run has {self.count} processes: resume with {len(streams)} processes.')
    self.source = make_source(config, tokenizer, split, streams and streams[self.index],
                              (self.index, self.count))
    self.masker = Masker(tokenizer, config.data.mlm_probability, config.data.max_predictions,
                         config.data.whole_word_masking)
    self.seed, self.position = config.seed, resume.get('position', 0)
    self._rows = self._generate()

  def _local_block(self, position: int) -> int:
    return position // self.size * self.local

  def _generate(self) -> Iterator[dict]:
    streaming = isinstance(self.source, StreamSource)
    for start in itertools.count(self.position, self.size):
      samples = range(start + self.index * self.local, start + (self.index + 1) * self.local)
      first = self._local_block(start)
      blocks = range(first, first + self.local) if streaming else None
      yield make_batch(self.source, self.masker, samples, self.seed, blocks)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._rows)

  def checkpoint(self, position: int) -> dict:
    """{'position': position}, and with a stream every process's state there
    (a collective: every process calls it)."""
    if not isinstance(self.source, StreamSource):
      return {'position': position}
    state = self.source.state(self._local_block(position))
    return {'position': position, 'streams': gather_json(state, self.count)}


def gather_json(value, count: int) -> list:
  """`value` of every process, in process order (JSON through an all-gather)."""
  if count == 1:
    return [value]
  raw = np.frombuffer(json.dumps(value).encode(), np.uint8)
  length = int(np.max(multihost_utils.process_allgather(np.array([raw.size]))))
  rows = np.asarray(multihost_utils.process_allgather(np.pad(raw, (0, length - raw.size))))
  return [json.loads(bytes(row).rstrip(b'\0')) for row in rows.reshape(count, -1)]


def batches(config, tokenizer, split: str = 'train', position: int | dict = 0,
            process_index: int | None = None, process_count: int | None = None):
  """Batches of `split` from global sample `position` (or a checkpoint's
  data state) on: this process's rows (train.batch_size / process_count of
  them, the process_index-th slice of each global batch; both default to
  JAX's), built ahead in a thread so the accelerator does not wait on the
  host. The source is opened (and a corpus tokenized, once) before this
  returns, so its errors surface here. `checkpoint(position)` of the result
  is the data state to save."""
  resume = position if isinstance(position, dict) else {'position': position}
  local = Batches(config, tokenizer, split, resume, process_index, process_count)
  first = next(local)
  return Prefetched(itertools.chain([first], local), config.data.prefetch, local.checkpoint)


def measure_throughput(config, tokenizer, num_batches: int = 20, split: str = 'train') -> float:
  """Tokens (batch_size x seq_len slots) per second the pipeline produces on
  one process, without a model and without the prefetch thread; the corpus
  is opened (and tokenized, if not cached) before the clock starts."""
  local = Batches(config, tokenizer, split, {}, 0, 1)
  next(local)
  started = time.perf_counter()
  for _ in range(num_batches):
    next(local)
  elapsed = time.perf_counter() - started
  return num_batches * config.train.batch_size * config.data.seq_len / elapsed


class Prefetched:
  """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its
  errors. `checkpoint` is the producer's, passed through."""

  def __init__(self, iterator: Iterator, size: int, checkpoint=None):
    self.checkpoint = checkpoint
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._done = object()
    threading.Thread(target=self._work, args=(iterator,), daemon=True).start()

  def _work(self, iterator):
    try:
      for item in iterator:
        self._queue.put(item)
      self._queue.put(self._done)
    except BaseException as e:  # Surfaced in the consumer's thread.
      self._queue.put(e)

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if item is self._done:
      self._queue.put(item)
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

