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
from sctd_jax.data import workers as workers_lib


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


# SplitMix64's constants (Steele, Lea and Flood 2014).
_GOLDEN, _MIX1, _MIX2 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                         np.uint64(0x94D049BB133111EB))


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finalizer: a bijection of uint64 that scrambles every bit."""
  x = (x ^ (x >> np.uint64(30))) * _MIX1
  x = (x ^ (x >> np.uint64(27))) * _MIX2
  return x ^ (x >> np.uint64(31))


def row_uniforms(keys: np.ndarray, count: int) -> np.ndarray:
  """`count` uniforms in [0, 1) per row of integer `keys` [rows, k]: row i's
  are SplitMix64's stream seeded by a hash of keys[i], so they depend on
  that row's key alone. One vectorised pass for the whole batch: a seeded
  numpy Generator per row cost more than the rest of the masking."""
  with np.errstate(over='ignore'):
    state = np.zeros(len(keys), np.uint64)
    for column in np.asarray(keys, np.int64).T.astype(np.uint64):
      state = _mix(state + _GOLDEN + column)
    counters = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
    bits = _mix(state[:, None] + counters[None, :])
  return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


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
    special = np.asarray(sorted(set(tokenizer.all_special_ids)))
    self.special = np.zeros(len(tokenizer), bool)
    self.special[special] = True
    self.random_ids = np.flatnonzero(~self.special)
    self.continues = continues_word(tokenizer) if whole_word else None

  def _words(self, input_ids: np.ndarray, maskable: np.ndarray, scores: np.ndarray):
    """The tokens' scores (their word's; 2 if not maskable), whether each
    starts a word, and the size (in pieces) of the word each starts."""
    if self.continues is None:  # Every maskable token is a word of its own.
      return np.where(maskable, scores, 2.0), maskable, np.ones(maskable.shape, np.int64)
    follows = np.pad(maskable[:, :-1], ((0, 0), (1, 0)))
    starts = maskable & ~(self.continues[input_ids] & follows)
    word = np.cumsum(starts, axis=1)
    rows, length = np.arange(len(scores))[:, None], scores.shape[1]
    scores = np.where(maskable, scores[rows, np.maximum(word - 1, 0)], 2.0)
    # A word runs from its start to the next start or unmaskable token.
    index = np.arange(length)
    start = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    ends = np.pad(np.where(starts | ~maskable, index, length), ((0, 0), (0, 1)),
                  constant_values=length)
    end = np.minimum.accumulate(ends[:, :0:-1], axis=1)[:, ::-1]
    return scores, starts, end - start

  def __call__(self, input_ids: np.ndarray, keys: np.ndarray) -> dict:
    """Masks row i of `input_ids` with random numbers keyed by `keys[i]`
    (integers) alone."""
    (batch, length), num_preds = input_ids.shape, self.max_predictions
    uniform = row_uniforms(keys, length + 2 * num_preds)
    scores, draw, pick = np.split(uniform, [length, length + num_preds], axis=1)
    rows = np.arange(batch)[:, None]

    maskable = ~self.special[input_ids]
    # One random score per word; the words of the lowest scores are drawn.
    scores, starts, size = self._words(input_ids, maskable, scores)
    n = np.minimum(num_preds, np.maximum(
        1, np.round(maskable.sum(1) * self.probability).astype(np.int64)))
    # The num_preds lowest scores in order, ties by position: each word's
    # pieces together, as a stable sort of all scores would list them.
    lowest = np.argpartition(scores, num_preds - 1, axis=1)[:, :num_preds]
    order = np.take_along_axis(
        lowest, np.lexsort((lowest, scores[rows, lowest]), axis=1), axis=1)
    # The targets: the words that end within the first n of the order (a
    # word first listed at j ends at j + its size).
    ends_at = np.arange(num_preds)[None] + size[rows, order]
    count = np.where(starts[rows, order] & (ends_at <= n[:, None]), ends_at, 0).max(1)

    weights = np.arange(num_preds)[None, :] < count[:, None]
    positions = np.where(weights, order, 0)
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


def sample_keys(seed: int, split: str, samples: range) -> np.ndarray:
  """The masking keys of global samples `samples`: (seed, split, sample)."""
  return np.stack(np.broadcast_arrays(seed, SPLITS[split], np.asarray(samples)), axis=1)


def make_batch(source, masker: Masker, samples: range, seed: int,
               blocks: range | None = None) -> dict:
  """The rows of global samples `samples`: blocks `blocks` (default: the
  same numbers) of the source, masked by the samples' numbers."""
  ids = source.blocks(samples if blocks is None else blocks)
  batch = masker(ids, sample_keys(seed, source.split, samples))
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

  def batch_at(self, start: int) -> dict:
    """This process's rows of the global batch that starts at sample `start`
    (a stream: only the next batch)."""
    samples = range(start + self.index * self.local, start + (self.index + 1) * self.local)
    first = self._local_block(start)
    blocks = range(first, first + self.local) if isinstance(self.source, StreamSource) else None
    return make_batch(self.source, self.masker, samples, self.seed, blocks)

  def _generate(self) -> Iterator[dict]:
    for start in itertools.count(self.position, self.size):
      yield self.batch_at(start)

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
            process_index: int | None = None, process_count: int | None = None,
            workers: int = 0):
  """Batches of `split` from global sample `position` (or a checkpoint's
  data state) on: this process's rows (train.batch_size / process_count of
  them, the process_index-th slice of each global batch; both default to
  JAX's), built ahead in a thread so the accelerator does not wait on the
  host, and with `workers` > 0 in that many worker processes (the same
  batches: each is a pure function of its position). The source is opened
  (and a corpus tokenized, once) before this returns, so its errors surface
  here. `checkpoint(position)` of the result is the data state to save."""
  resume = position if isinstance(position, dict) else {'position': position}
  local = Batches(config, tokenizer, split, resume, process_index, process_count)
  first = next(local)
  if not workers:
    return Prefetched(itertools.chain([first], local), config.data.prefetch, local.checkpoint)
  rest = workers_lib.WorkerBatches((config, tokenizer, split, local.index, local.count),
                                   local.position + local.size, local.size, workers)
  return Prefetched(itertools.chain([first], rest), config.data.prefetch, local.checkpoint,
                    rest.close)


def measure_throughput(config, tokenizer, num_batches: int = 50, split: str = 'train') -> float:
  """Tokens (batch_size x seq_len slots) per second the pipeline produces on
  one process (with `data.workers` worker processes), without a model; the
  corpus is opened (and tokenized, if not cached) and the workers have each
  made a batch before the clock starts."""
  rows = batches(config, tokenizer, split, 0, 0, 1, config.data.workers)
  for _ in range(1 + 2 * config.data.workers):
    next(rows)
  started = time.perf_counter()
  for _ in range(num_batches):
    next(rows)
  elapsed = time.perf_counter() - started
  return num_batches * config.train.batch_size * config.data.seq_len / elapsed


class Prefetched:
  """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its
  errors. `checkpoint` is the producer's, passed through; `close()` stops
  its worker processes, if any (else they stop when the program ends)."""

  def __init__(self, iterator: Iterator, size: int, checkpoint=None, close=None):
    self.checkpoint = checkpoint
    self.close = close or (lambda: None)
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

