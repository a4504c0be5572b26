"""Pretraining corpora as blocks: `make_source(config, tokenizer, split)`.

`data.source` names a corpus (see `readers`: 'synthetic', 'hf:...' or
'files:GLOB'); this module tokenizes and packs it.

Packing follows RoBERTa's FULL-SENTENCES, as the paper does (no NSP): each
document is tokenized once (an Arrow cache keyed by the corpus and the
tokenizer), the documents are joined end to end with [SEP] between them, and
the stream is cut into blocks of `seq_len - 2` tokens framed as
[CLS] ... [SEP], one segment. The last block of a split is padded, not
dropped, so no token is lost. Block order is a fresh permutation per epoch,
fixed by (seed, split, epoch): global sample `p` is `source.block(p)`,
whichever process reads it, whenever.
"""

import itertools
import os
from typing import Iterator

from absl import logging
import datasets
from datasets.distributed import split_dataset_by_node
import jax
from jax.experimental import multihost_utils
import numpy as np
import pyarrow as pa
import tokenizers

from sctd_jax.data import mixture
from sctd_jax.data import readers
from sctd_jax.data import synthetic
# Re-exported: callers name them as sources.*.
from sctd_jax.data.readers import DataError  # pylint: disable=unused-import
from sctd_jax.data.readers import FILE_TYPES  # pylint: disable=unused-import
from sctd_jax.data.readers import load_documents  # pylint: disable=unused-import
from sctd_jax.data.readers import match_files  # pylint: disable=unused-import
from sctd_jax.data.readers import parse_source  # pylint: disable=unused-import
from sctd_jax.data.readers import read_files  # pylint: disable=unused-import

SPLITS = {'train': 0, 'validation': 1}
# Documents per packed block of the synthetic corpus come from a disjoint
# index range per block.
_DOCS_PER_BLOCK = 1 << 12
# Documents a stream shuffles together; a resume re-reads at most one window.
_WINDOW = 1000
# Stream states kept for the checkpoint: more blocks than prefetch reads ahead.
_REMEMBERED_BLOCKS = 1 << 14
_TOKEN_FEATURES = datasets.Features({'input_ids': datasets.List(datasets.Value('int32'))})


def framer(tokenizer, seq_len: int):
  """A function of tokens: [CLS] tokens [SEP] [PAD]... as one row of `seq_len`
  ids (the ids are looked up once: transformers' lookups are slow)."""
  cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

  def frame(tokens) -> np.ndarray:
    row = np.full(seq_len, pad, np.int32)
    row[0], row[1:len(tokens) + 1], row[len(tokens) + 1] = cls, tokens, sep
    return row

  return frame


class BlockSource:
  """A source of blocks: `block(i)`, and `blocks(indices)`, the rows of
  several (one call per block unless a source does better)."""

  def block(self, index: int) -> np.ndarray:
    raise NotImplementedError

  def blocks(self, indices) -> np.ndarray:
    return np.stack([self.block(int(i)) for i in indices])


def word_encoder(tokenizer):
  """A function of text to ids (no special tokens). When the tokenizer splits
  text at spaces before anything else (BERT's pre-tokenizer, or Whitespace)
  and normalizes character by character (BERT's normalizer, lower-casing),
  a text's ids are its space-separated words' ids end to end: each word is
  encoded once and looked up thereafter (the synthetic corpus has a few
  thousand words). Other tokenizers encode every text."""
  backend = tokenizer.backend_tokenizer
  encode = lambda text: backend.encode(text, add_special_tokens=False).ids
  word_wise = (isinstance(backend.pre_tokenizer, _SPACE_FIRST)
               and (backend.normalizer is None or isinstance(backend.normalizer, _PER_CHAR)))
  if not word_wise:
    return encode

  class Words(dict):
    def __missing__(self, word):
      self[word] = ids = encode(word)
      return ids

  words = Words()
  return lambda text: list(itertools.chain.from_iterable(map(words.__getitem__,
                                                             text.split(' '))))


_SPACE_FIRST = (tokenizers.pre_tokenizers.BertPreTokenizer,
                tokenizers.pre_tokenizers.Whitespace, tokenizers.pre_tokenizers.WhitespaceSplit)
_PER_CHAR = (tokenizers.normalizers.BertNormalizer, tokenizers.normalizers.Lowercase)


class SyntheticSource(BlockSource):
  """Packed blocks of the built-in corpus: [CLS] sentences... [SEP] [PAD]...

  Whole sentences from consecutive documents fill each block (no NSP, one
  segment, as RoBERTa's FULL-SENTENCES); block j is a pure function of
  (seed, split, j), and the stream never ends."""

  def __init__(self, tokenizer, seq_len: int, seed: int, split: str = 'train'):
    self.tokenizer, self.seq_len, self.split = tokenizer, seq_len, split
    self.seed = seed + 1_000_003 * SPLITS[split]
    self._frame = framer(tokenizer, seq_len)
    self._encode = word_encoder(tokenizer)

  def block(self, index: int) -> np.ndarray:
    room = self.seq_len - 2
    tokens: list[int] = []
    for doc in range(_DOCS_PER_BLOCK):
      for sentence in synthetic.sentences(self.seed, index * _DOCS_PER_BLOCK + doc):
        ids = self._encode(sentence.text)
        if len(tokens) + len(ids) > room:
          # A sentence longer than a block is cut, not left out: else the
          # block would be empty ([CLS] [SEP]) at short seq_len.
          return self._frame(tokens or ids[:room])
        tokens.extend(ids)
    return self._frame(tokens)


class TokenColumn:
  """The tokenized documents end to end, read in place from the (memory-mapped)
  Arrow chunks of an `input_ids` column: a corpus larger than RAM costs only
  the pages its blocks touch."""

  def __init__(self, column: pa.ChunkedArray):
    chunks = [c for c in column.chunks if len(c)]
    self._values = [c.flatten().to_numpy() for c in chunks]
    self._starts = np.cumsum([0] + [len(v) for v in self._values])
    lengths = [np.zeros(0, np.int32)] + [c.value_lengths().to_numpy() for c in chunks]
    self.doc_offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths), dtype=np.int64)])

  def take(self, positions: np.ndarray) -> np.ndarray:
    """The tokens at `positions` (any shape), gathered chunk by chunk."""
    chunk = np.searchsorted(self._starts, positions, 'right') - 1
    out = np.empty(positions.shape, np.int32)
    for c in range(chunk.min(), chunk.max() + 1):
      here = chunk == c
      out[here] = self._values[c][positions[here] - self._starts[c]]
    return out


class PackedSource(BlockSource):
  """Blocks cut from the documents `docs` of a tokenized corpus, in a fresh
  order each epoch. Every document's ids start with [SEP] (see `tokenize`);
  dropping the first one leaves [SEP] between documents only."""

  def __init__(self, tokens: TokenColumn, docs: range, tokenizer, seq_len: int,
               seed: int, split: str, name: str):
    self.tokens, self.tokenizer, self.seq_len, self.split = tokens, tokenizer, seq_len, split
    self._seed = [seed, SPLITS[split]]
    self._epoch, self._order = -1, None
    self._cls, self._sep, self._pad = (tokenizer.cls_token_id, tokenizer.sep_token_id,
                                       tokenizer.pad_token_id)
    offsets = tokens.doc_offsets[docs.start:docs.stop + 1]
    num_docs = int(np.count_nonzero(np.diff(offsets)))
    where = f'{name} ({split} split, {len(docs)} documents)'
    if not num_docs:
      raise DataError(f'{where} has no text (empty documents are skipped).')
    self.start, self.stop = int(offsets[0]) + 1, int(offsets[-1])
    length = self.stop - self.start
    room = seq_len - 2
    if length < room:
      raise DataError(
          f'{where} has {length - num_docs + 1} tokens, fewer than one block of '
          f'data.seq_len - 2 = {room}: add text or lower data.seq_len.')
    self.num_blocks = -(-length // room)
    logging.info('%s: %d documents (%d empty, skipped), %d tokens, %d blocks of '
                 '%d tokens with [SEP] between documents, %d tokens in the final '
                 'partial block.', where, num_docs, len(docs) - num_docs,
                 length - num_docs + 1, self.num_blocks, room, length % room)

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._order = np.random.default_rng([*self._seed, epoch]).permutation(self.num_blocks)
      self._epoch = epoch
    return self._order

  def block(self, index: int) -> np.ndarray:
    return self.blocks([index])[0]

  def blocks(self, indices) -> np.ndarray:
    """The blocks at `indices`, framed, in one gather from the token column."""
    room = self.seq_len - 2
    epochs, within = np.divmod(np.asarray(indices, np.int64), self.num_blocks)
    starts = np.empty(len(within), np.int64)
    for epoch in np.unique(epochs):  # At most two in a batch but the smallest corpora.
      here = epochs == epoch
      starts[here] = self._permutation(int(epoch))[within[here]]
    positions = self.start + starts[:, None] * room + np.arange(room)[None]
    inside = positions < self.stop
    rows = np.full((len(starts), self.seq_len), self._pad, np.int32)
    rows[:, 0] = self._cls
    rows[:, 1:-1] = np.where(inside, self.tokens.take(np.minimum(positions, self.stop - 1)),
                             self._pad)
    rows[np.arange(len(starts)), inside.sum(1) + 1] = self._sep
    return rows


class StreamSource(BlockSource):
  """Blocks packed in reading order from this process's shard of a corpus
  read as a stream (`data.streaming`): nothing is cached, so the corpus need
  not fit on disk. `block(j)` is block j of this process's stream, read
  forward.

  Each process reads only its shard (`split_dataset_by_node`: whole files or
  Hub shards when their count divides evenly among the processes, else every
  process skips the others' documents). The documents are shuffled in
  windows of `_WINDOW` by (seed, split, epoch, window), and the shard order
  changes each epoch. `state(j)` (recent j only) is everything needed to
  continue at block j: the HF iterator's state at the start of the window,
  how far into the window, and the tokens not yet in a block. So a resume
  re-reads at most one window (no tokenizing before the resume point), and
  the blocks after it are exactly those of an uninterrupted run."""

  _EPOCH_START = dict(block=0, epoch=0, window=0, documents=None, offset=0, started=False,
                      pending=[])

  def __init__(self, documents: datasets.IterableDataset, column: str, tokenizer,
               seq_len: int, seed: int, split: str, name: str, state: dict | None = None,
               process: tuple[int, int] | None = None):
    self.tokenizer, self.seq_len, self.split, self._name = tokenizer, seq_len, split, name
    self._frame = framer(tokenizer, seq_len)
    self._column, self._seed = column, [seed, SPLITS[split]]
    rank, world_size = process or (jax.process_index(), jax.process_count())
    self._documents = split_dataset_by_node(documents, rank=rank, world_size=world_size)
    self._start = state or self._EPOCH_START
    self._states: dict[int, dict] = {}
    self.documents_tokenized = 0
    self._blocks, self._next = self._stream(self._start), self._start['block']

  def _stream(self, s: dict) -> Iterator[np.ndarray]:
    room, sep = self.seq_len - 2, self.tokenizer.sep_token_id
    pending, block, offset, started = list(s['pending']), s['block'], s['offset'], s['started']
    for epoch in itertools.count(s['epoch']):
      self._documents.set_epoch(epoch)  # Reorders the shards.
      at = s['documents'] if epoch == s['epoch'] else None
      self._documents.load_state_dict(at)
      texts = (row[self._column] for row in self._documents)
      window = s['window'] if epoch == s['epoch'] else 0
      while batch := list(itertools.islice(texts, _WINDOW)):
        after = self._documents.state_dict()
        order = np.random.default_rng([*self._seed, epoch, window]).permutation(len(batch))
        for k in range(offset, len(batch)):
          ids = self.tokenizer.backend_tokenizer.encode(
              batch[order[k]] or '', add_special_tokens=False).ids
          self.documents_tokenized += 1
          # [SEP] between documents, not before an epoch's first.
          pending.extend([sep, *ids] if ids and started else ids)
          started = started or bool(ids)
          while len(pending) >= room:
            self._remember(block, dict(block=block + 1, epoch=epoch, window=window,
                                       documents=at, offset=k + 1, started=True,
                                       pending=np.asarray(pending[room:], np.int32)))
            yield self._frame(pending[:room])
            pending, block = pending[room:], block + 1
        at, offset, window = after, 0, window + 1
      if not started:
        raise DataError(f'{self._name} ({self.split} split) has no text (empty '
                        'documents are skipped).')
      if pending:  # An epoch's last block is padded, not carried over.
        self._remember(block, dict(self._EPOCH_START, block=block + 1, epoch=epoch + 1))
        yield self._frame(pending)
        block += 1
      pending, offset, started = [], 0, False

  def _remember(self, block: int, after: dict) -> None:
    """Keeps the state after `block` (the state at block + 1) a while."""
    self._states[block + 1] = after
    self._states.pop(block + 1 - _REMEMBERED_BLOCKS, None)

  def state(self, block: int) -> dict:
    """The JSON state that continues at `block` (one of the recent ones)."""
    s = self._start if block == self._start['block'] else self._states[block]
    return dict(s, pending=[int(t) for t in s['pending']])

  def block(self, index: int) -> np.ndarray:
    if index < self._next:
      raise ValueError(f'stream block {index} was already read (next: {self._next}); '
                       'a stream only reads forward.')
    for _ in range(index - self._next):
      next(self._blocks)
    self._next = index + 1
    return next(self._blocks)


# --------------------------------------------------------------- tokenizing
def tokenizer_fingerprint(tokenizer) -> str:
  """Changes whenever the tokenizer would produce other ids."""
  if not tokenizer.is_fast:
    raise DataError('config key data.tokenizer names a tokenizer without a fast '
                    '(Rust) implementation; the pipeline needs one.')
  return readers.digest(tokenizer.backend_tokenizer.to_str(), tokenizer.sep_token_id)


def _tokenize(batch: dict, tokenizer, column: str) -> dict:
  """Each document's ids, [SEP] first; an empty document stays empty."""
  texts = [t or '' for t in batch[column]]
  # The Rust tokenizer itself (on every core): transformers' wrapper adds 25%.
  encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
  return {'input_ids': [[tokenizer.sep_token_id, *e.ids] if e.ids else [] for e in encodings]}


def tokenize(documents: datasets.Dataset, column: str, tokenizer, data) -> datasets.Dataset:
  """The documents' ids, computed once per (corpus, tokenizer) in
  `data.num_proc` processes and cached as Arrow in `readers.cache_dir(data)`."""
  key = readers.digest(readers.CACHE_VERSION, documents._fingerprint, column,  # pylint: disable=protected-access
                tokenizer_fingerprint(tokenizer))
  return documents.map(
      _tokenize, batched=True, fn_kwargs=dict(tokenizer=tokenizer, column=column),
      remove_columns=documents.column_names, features=_TOKEN_FEATURES,
      num_proc=readers.num_proc(data, len(documents)), new_fingerprint=key,
      cache_file_name=os.path.join(readers.cache_dir(data), f'tokens-{key}.arrow'),
      desc='Tokenizing')


# ------------------------------------------------------------------ sources
def process_zero_first(name: str, build):
  """`build()` in process 0, then, after a barrier, in the others: with
  `data.cache_dir` on a filesystem all hosts share, they find process 0's
  caches instead of redoing (and racing on) the work."""
  if jax.process_count() == 1:
    return build()
  if jax.process_index() == 0:
    out = build()
  multihost_utils.sync_global_devices(name)
  if jax.process_index() != 0:
    out = build()
  return out


def make_source(config, tokenizer, split: str = 'train', stream_state: dict | None = None,
                process: tuple[int, int] | None = None):
  """The source of `split`'s blocks: `block(p)` is global sample p (with
  `data.streaming`, block p of the stream of `process` (index, count; JAX's
  by default), continuing from `stream_state`). With `data.sources`, the
  mixture of its corpora (each with its own held-out validation split
  unless `data.validation_source` names one)."""
  d = config.data
  if split == 'validation' and d.validation_source:
    return _corpus_source(d.validation_source, 'data.validation_source', config, tokenizer,
                          split, stream_state, process)
  if d.sources:
    specs, weights = mixture.parse_mixture(d.sources)
    return mixture.MixedSource(
        [_corpus_source(s, 'data.sources', config, tokenizer, split) for s in specs],
        weights, config.seed, SPLITS[split])
  return _corpus_source(d.source, 'data.source', config, tokenizer, split, stream_state,
                        process)


def _corpus_source(spec: str, key: str, config, tokenizer, split: str,
                   stream_state: dict | None = None, process: tuple[int, int] | None = None):
  """The blocks of the corpus `spec` (named by config `key`)."""
  d = config.data
  corpus = readers.parse_source(spec, key)
  if corpus.kind == 'synthetic':
    return SyntheticSource(tokenizer, d.seq_len, config.seed, split)
  name = readers.describe(corpus)
  if d.streaming:
    documents, column = readers.load_documents(corpus, d)
    return StreamSource(documents, column, tokenizer, d.seq_len, config.seed, split, name,
                        stream_state, process)

  def read_and_tokenize():
    documents, column = readers.load_documents(corpus, d)
    return documents, tokenize(documents, column, tokenizer, d)

  documents, tokenized = process_zero_first(f'tokenized {name}', read_and_tokenize)
  tokens = TokenColumn(tokenized.data.column('input_ids'))
  docs = range(len(documents))
  if not d.validation_source:
    docs = held_out(docs, d.validation_fraction, split)
  return PackedSource(tokens, docs, tokenizer, d.seq_len, config.seed, split, name)


def held_out(docs: range, fraction: float, split: str) -> range:
  """The documents of `split` when the last `fraction` of `docs` (at least one)
  is the validation split: a contiguous range, so nothing is copied. As in HF's
  run_mlm.py; shuffle a corpus sorted by topic beforehand."""
  cut = len(docs) - int(np.ceil(fraction * len(docs)))
  return docs[cut:] if split == 'validation' else docs[:cut]


def texts(data, seed: int) -> Iterator[str]:
  """The training documents of `data.source` as text, in corpus order (the
  validation documents held out), for fitting a tokenizer; with
  `data.sources`, each corpus's first documents in turn, as many of each as
  its weight's share of `data.tokenizer_docs`."""
  if not data.sources:
    return _corpus_texts(data.source, data, seed, 'data.source')
  specs, weights = mixture.parse_mixture(data.sources)
  if data.tokenizer_docs == -1:
    return itertools.chain.from_iterable(_corpus_texts(s, data, seed, 'data.sources')
                                         for s in specs)
  counts = mixture.shares(weights, data.tokenizer_docs)
  return itertools.chain.from_iterable(
      itertools.islice(_corpus_texts(s, data, seed, 'data.sources'), int(n))
      for s, n in zip(specs, counts))


def _corpus_texts(spec: str, data, seed: int, key: str) -> Iterator[str]:
  corpus = readers.parse_source(spec, key)
  if corpus.kind == 'synthetic':
    return (' '.join(s.text for s in synthetic.document(seed, i)) for i in itertools.count())
  documents, column = readers.load_documents(corpus, data)
  if not data.streaming and not data.validation_source:
    documents = documents.select(held_out(range(len(documents)), data.validation_fraction,
                                          'train'))
  return (text or '' for batch in documents.iter(batch_size=1000) for text in batch[column])
