"""Pretraining corpora: where documents come from and how they become blocks.

`data.source` (and `data.validation_source`) name a corpus:
- 'synthetic': the built-in grammar corpus (`sctd_jax.data.synthetic`), generated
  on demand;
- 'hf:NAME[:CONFIG][@SPLIT]': `datasets.load_dataset(NAME, CONFIG,
  split=SPLIT)` (SPLIT defaults to 'train'), or a folder written by
  `save_to_disk` (of a Dataset, or of a DatasetDict and its SPLIT); the
  documents are its `data.text_column`;
- 'files:GLOB': local files in sorted order: .txt (a blank line separates
  documents), .jsonl (one object per line, text in `data.text_column`) and
  .parquet (column `data.text_column`).

Packing follows RoBERTa's FULL-SENTENCES, as the paper does (no NSP): each
document is tokenized once (an Arrow cache keyed by the corpus and the
tokenizer), the documents are joined end to end with [SEP] between them, and
the stream is cut into blocks of `seq_len - 2` tokens framed as
[CLS] ... [SEP], one segment. The last block of a split is padded, not
dropped, so no token is lost. Block order is a fresh permutation per epoch,
fixed by (seed, split, epoch): global sample `p` is `source.block(p)`,
whichever process reads it, whenever.
"""

import glob
import hashlib
import itertools
import json
import os
from typing import Iterator, NamedTuple

from absl import logging
import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sctd_jax import config as config_lib
from sctd_jax.data import synthetic

SPLITS = {'train': 0, 'validation': 1}
FILE_TYPES = ('.txt', '.jsonl', '.parquet')
# Documents per packed block of the synthetic corpus come from a disjoint
# index range per block.
_DOCS_PER_BLOCK = 1 << 12
# Documents a stream holds to shuffle its order each epoch.
_SHUFFLE_BUFFER = 10_000
# Bumped when the meaning of a cache changes, so old caches are not reused.
_CACHE_VERSION = 1
_TOKEN_FEATURES = datasets.Features({'input_ids': datasets.List(datasets.Value('int32'))})
_TEXT_FEATURES = datasets.Features({'text': datasets.Value('string')})


class DataError(config_lib.ConfigError):
  """A corpus that cannot be read or packed; the message names the file or key."""


class Corpus(NamedTuple):
  """A parsed `data.source`: kind 'synthetic', 'hf' or 'files'."""
  kind: str
  name: str = ''        # Dataset name or folder (hf), glob (files).
  config: str = ''      # Dataset config (hf).
  split: str = 'train'  # Dataset split (hf).


def parse_source(spec: str, key: str = 'data.source') -> Corpus:
  """'synthetic' | 'hf:NAME[:CONFIG][@SPLIT]' | 'files:GLOB' -> Corpus."""
  kind, _, rest = spec.partition(':')
  if spec == 'synthetic':
    return Corpus('synthetic')
  if kind == 'files' and rest:
    return Corpus('files', rest)
  if kind == 'hf':
    name_config, _, split = rest.partition('@')
    name, _, config = name_config.partition(':')
    if name:
      return Corpus('hf', name, config, split or 'train')
  raise DataError(f"config key {key}={spec!r} is invalid: use 'synthetic', "
                  "'hf:NAME[:CONFIG][@SPLIT]' or 'files:GLOB'.")


def framer(tokenizer, seq_len: int):
  """A function of tokens: [CLS] tokens [SEP] [PAD]... as one row of `seq_len`
  ids (the ids are looked up once: transformers' lookups are slow)."""
  cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

  def frame(tokens) -> np.ndarray:
    row = np.full(seq_len, pad, np.int32)
    row[0], row[1:len(tokens) + 1], row[len(tokens) + 1] = cls, tokens, sep
    return row

  return frame


class SyntheticSource:
  """Packed blocks of the built-in corpus: [CLS] sentences... [SEP] [PAD]...

  Whole sentences from consecutive documents fill each block (no NSP, one
  segment, as RoBERTa's FULL-SENTENCES); block j is a pure function of
  (seed, split, j), and the stream never ends."""

  def __init__(self, tokenizer, seq_len: int, seed: int, split: str = 'train'):
    self.tokenizer, self.seq_len, self.split = tokenizer, seq_len, split
    self.seed = seed + 1_000_003 * SPLITS[split]
    self._frame = framer(tokenizer, seq_len)

  def block(self, index: int) -> np.ndarray:
    room = self.seq_len - 2
    tokens: list[int] = []
    for doc in range(_DOCS_PER_BLOCK):
      texts = [s.text for s in synthetic.document(self.seed, index * _DOCS_PER_BLOCK + doc)]
      for ids in self.tokenizer(texts, add_special_tokens=False)['input_ids']:
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

  def __getitem__(self, span: slice) -> np.ndarray:
    """Tokens `span.start` to `span.stop`, which may cross chunks."""
    pieces, at = [], span.start
    chunk = int(np.searchsorted(self._starts, at, 'right')) - 1
    while at < span.stop:
      base = self._starts[chunk]
      pieces.append(self._values[chunk][at - base:span.stop - base])
      at += len(pieces[-1])
      chunk += 1
    return np.concatenate(pieces)


class PackedSource:
  """Blocks cut from the documents `docs` of a tokenized corpus, in a fresh
  order each epoch. Every document's ids start with [SEP] (see `tokenize`);
  dropping the first one leaves [SEP] between documents only."""

  def __init__(self, tokens: TokenColumn, docs: range, tokenizer, seq_len: int,
               seed: int, split: str, name: str):
    self.tokens, self.tokenizer, self.seq_len, self.split = tokens, tokenizer, seq_len, split
    self._frame = framer(tokenizer, seq_len)
    self._seed = [seed, SPLITS[split]]
    self._epoch, self._order = -1, None
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

  def block(self, index: int) -> np.ndarray:
    epoch, i = divmod(index, self.num_blocks)
    if epoch != self._epoch:
      self._order = np.random.default_rng([*self._seed, epoch]).permutation(self.num_blocks)
      self._epoch = epoch
    start = self.start + int(self._order[i]) * (self.seq_len - 2)
    stop = min(start + self.seq_len - 2, self.stop)
    return self._frame(self.tokens[start:stop])


def chunks(token_lists: Iterator[list[int]], length: int) -> Iterator[np.ndarray]:
  """The lists end to end without the first token, cut into `length`-token
  chunks; the last may be shorter. The streaming twin of `PackedSource`."""
  pending, size, first = [], 0, True
  for ids in token_lists:
    if not ids:
      continue
    if first:
      ids, first = ids[1:], False
    pending.append(np.asarray(ids, np.int32))
    size += len(ids)
    if size >= length:
      flat = np.concatenate(pending)
      cut = size - size % length
      yield from flat[:cut].reshape(-1, length)
      pending, size = [flat[cut:]], size - cut
  if size:
    yield np.concatenate(pending)


class StreamSource:
  """Blocks packed in reading order from a corpus read as a stream
  (`data.streaming`): nothing is cached, so the corpus need not fit on disk,
  but access is forward only. Asking for an earlier block replays the stream
  from its start, so a resumed run re-reads (and re-tokenizes) the corpus up
  to its position, and every process reads all of it to keep its own rows.
  Each epoch reads the documents in a new order, from a shuffle buffer
  seeded by (seed, epoch)."""

  def __init__(self, documents: datasets.IterableDataset, column: str, tokenizer,
               seq_len: int, seed: int, split: str, name: str):
    self.tokenizer, self.seq_len, self.split, self._name = tokenizer, seq_len, split, name
    self._frame = framer(tokenizer, seq_len)
    self._tokens = tokenize_stream(
        documents.shuffle(seed=seed, buffer_size=_SHUFFLE_BUFFER), column, tokenizer)
    self._blocks, self._next = self._stream(), 0

  def _stream(self) -> Iterator[np.ndarray]:
    for epoch in itertools.count():
      self._tokens.set_epoch(epoch)  # Reseeds the shuffle.
      count = 0
      for count, tokens in enumerate(chunks(
          (row['input_ids'] for row in self._tokens), self.seq_len - 2), 1):
        yield self._frame(tokens)
      if not count:
        raise DataError(f'{self._name} ({self.split} split) has no text (empty '
                        'documents are skipped).')

  def block(self, index: int) -> np.ndarray:
    if index < self._next:
      self._blocks, self._next = self._stream(), 0
    for _ in range(index - self._next):
      next(self._blocks)
    self._next = index + 1
    return next(self._blocks)


# ------------------------------------------------------------------ reading
def _decode(raw: bytes) -> tuple[str, int]:
  """UTF-8 text of `raw`, and how many undecodable byte sequences became U+FFFD."""
  try:
    return raw.decode('utf-8'), 0
  except UnicodeDecodeError:
    text = raw.decode('utf-8', errors='replace')
    return text, text.count('\ufffd') - raw.count('\ufffd'.encode())


def _text_documents(path: str, column: str) -> Iterator[tuple[str, int]]:
  """(document, undecodable count) of a .txt file: runs of non-blank lines."""
  del column  # Plain text has no fields.
  lines, bad = [], 0
  with open(path, 'rb') as f:
    for raw in f:
      line, n = _decode(raw)
      bad += n
      if line.strip():
        lines.append(line)
      elif lines:
        yield ''.join(lines), bad
        lines, bad = [], 0
  if lines:
    yield ''.join(lines), bad


def _jsonl_documents(path: str, column: str) -> Iterator[tuple[str, int]]:
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, 1):
      line, bad = _decode(raw)
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f'{path}:{number}: not a JSON object ({e}).') from None
      if not isinstance(record, dict) or column not in record:
        fields = list(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f'{path}:{number}: no field {column!r} (data.text_column); '
                        f'it has {fields}.')
      yield _text(record[column], f'{path}:{number}', column), bad


def _parquet_documents(path: str, column: str) -> Iterator[tuple[str, int]]:
  try:
    file = pq.ParquetFile(path)
  except pa.ArrowException as e:
    raise DataError(f'{path}: not a readable Parquet file ({e}).') from None
  if column not in file.schema_arrow.names:
    raise DataError(f'{path}: no column {column!r} (data.text_column); it has '
                    f'{file.schema_arrow.names}.')
  for batch in file.iter_batches(columns=[column]):
    for text in batch.column(0).to_pylist():
      yield _text(text, path, column), 0


def _text(value, where: str, column: str) -> str:
  """A document's text; None (a missing value) is an empty document."""
  if value is not None and not isinstance(value, str):
    raise DataError(f'{where}: field {column!r} (data.text_column) holds '
                    f'{type(value).__name__}, not text.')
  return value or ''


_READERS = {'.txt': _text_documents, '.jsonl': _jsonl_documents,
            '.parquet': _parquet_documents}


def read_files(paths: list[str], column: str) -> Iterator[dict]:
  """{'text': document} for each document of the files, in order; a file
  without any is one empty document (so it is counted as such). Undecodable
  bytes become U+FFFD and are counted in a warning naming the file."""
  for path in paths:
    bad, text = 0, None
    for text, n in _READERS[os.path.splitext(path)[1]](path, column):
      bad += n
      yield {'text': text}
    if text is None:
      yield {'text': ''}
    if bad:
      logging.warning('%s: %d undecodable byte sequence(s) (not UTF-8) replaced '
                      'by U+FFFD.', path, bad)


def match_files(pattern: str) -> list[str]:
  """The files `pattern` matches, sorted; an error names what is missing or
  not supported."""
  paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
  if not paths:
    raise DataError(f"config key data.source='files:{pattern}': no file matches "
                    f'{pattern!r} (from {os.getcwd()}).')
  for path in paths:
    if os.path.splitext(path)[1] not in FILE_TYPES:
      raise DataError(f"config key data.source='files:{pattern}' matches {path}, "
                      f'which is not one of {FILE_TYPES}.')
  return paths


def cache_dir(data) -> str:
  """Where the corpus and token caches of this project live."""
  return data.cache_dir or os.path.join(datasets.config.HF_DATASETS_CACHE, 'sctd_jax')


def _digest(*parts) -> str:
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def _num_proc(data, items: int) -> int | None:
  n = min(os.cpu_count() if data.num_proc == -1 else data.num_proc, items)
  return n if n > 1 else None


def load_documents(corpus: Corpus, data):
  """(documents, text column) of `corpus`: a `datasets.Dataset` (or, with
  `data.streaming`, an `IterableDataset`)."""
  if corpus.kind == 'files':
    paths = match_files(corpus.name)
    kwargs = dict(generator=read_files, features=_TEXT_FEATURES,
                  gen_kwargs=dict(paths=paths, column=data.text_column))
    if data.streaming:
      return datasets.IterableDataset.from_generator(**kwargs), 'text'
    # Keyed by the files' names, sizes and times, as datasets keys data_files.
    stamps = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    fingerprint = _digest(_CACHE_VERSION, data.text_column, stamps)
    try:
      return datasets.Dataset.from_generator(
          **kwargs, cache_dir=cache_dir(data), fingerprint=fingerprint,
          num_proc=_num_proc(data, len(paths))), 'text'
    except datasets.exceptions.DatasetGenerationError as e:
      if isinstance(e.__cause__, DataError):
        raise e.__cause__ from None
      raise
  try:
    if _saved_to_disk(corpus.name):
      documents = datasets.load_from_disk(corpus.name)
      if isinstance(documents, datasets.DatasetDict):
        if corpus.split not in documents:
          raise ValueError(f'no split {corpus.split!r}; it has {list(documents)}')
        documents = documents[corpus.split]
      if data.streaming:
        documents = documents.to_iterable_dataset()
    else:
      documents = datasets.load_dataset(
          corpus.name, corpus.config or None, split=corpus.split,
          streaming=data.streaming, cache_dir=data.cache_dir or None)
  except Exception as e:  # Whatever the Hub or the loader says, named for the user.
    raise DataError(f'{_describe(corpus)} could not be loaded: {e}') from e
  if documents.column_names is not None and data.text_column not in documents.column_names:
    raise DataError(f'{_describe(corpus)} has no column {data.text_column!r} '
                    f'(data.text_column); it has {documents.column_names}.')
  return documents, data.text_column


def _saved_to_disk(path: str) -> bool:
  return any(os.path.isfile(os.path.join(path, name)) for name in (
      datasets.config.DATASET_STATE_JSON_FILENAME, datasets.config.DATASETDICT_JSON_FILENAME))


def _describe(corpus: Corpus) -> str:
  if corpus.kind == 'hf':
    return f"hf:{corpus.name}{':' + corpus.config if corpus.config else ''}@{corpus.split}"
  return f'{corpus.kind}:{corpus.name}' if corpus.name else corpus.kind


# --------------------------------------------------------------- tokenizing
def tokenizer_fingerprint(tokenizer) -> str:
  """Changes whenever the tokenizer would produce other ids."""
  if not tokenizer.is_fast:
    raise DataError('config key data.tokenizer names a tokenizer without a fast '
                    '(Rust) implementation; the pipeline needs one.')
  return _digest(tokenizer.backend_tokenizer.to_str(), tokenizer.sep_token_id)


def _tokenize(batch: dict, tokenizer, column: str) -> dict:
  """Each document's ids, [SEP] first; an empty document stays empty."""
  texts = [t or '' for t in batch[column]]
  # The Rust tokenizer itself (on every core): transformers' wrapper adds 25%.
  encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
  return {'input_ids': [[tokenizer.sep_token_id, *e.ids] if e.ids else [] for e in encodings]}


def tokenize(documents: datasets.Dataset, column: str, tokenizer, data) -> datasets.Dataset:
  """The documents' ids, computed once per (corpus, tokenizer) in
  `data.num_proc` processes and cached as Arrow in `cache_dir(data)`."""
  key = _digest(_CACHE_VERSION, documents._fingerprint, column,  # pylint: disable=protected-access
                tokenizer_fingerprint(tokenizer))
  return documents.map(
      _tokenize, batched=True, fn_kwargs=dict(tokenizer=tokenizer, column=column),
      remove_columns=documents.column_names, features=_TOKEN_FEATURES,
      num_proc=_num_proc(data, len(documents)), new_fingerprint=key,
      cache_file_name=os.path.join(cache_dir(data), f'tokens-{key}.arrow'),
      desc='Tokenizing')


def tokenize_stream(documents: datasets.IterableDataset, column: str,
                    tokenizer) -> datasets.IterableDataset:
  """The documents' ids as `tokenize`'s, computed as they are read."""
  return documents.map(_tokenize, batched=True, remove_columns=[column],
                       fn_kwargs=dict(tokenizer=tokenizer, column=column))


# ------------------------------------------------------------------ sources
def make_source(config, tokenizer, split: str = 'train'):
  """The source of `split`'s blocks: `block(p)` is global sample p."""
  d = config.data
  spec = d.validation_source if split == 'validation' and d.validation_source else d.source
  corpus = parse_source(spec, 'data.validation_source' if spec != d.source else 'data.source')
  if corpus.kind == 'synthetic':
    return SyntheticSource(tokenizer, d.seq_len, config.seed, split)
  documents, column = load_documents(corpus, d)
  name = _describe(corpus)
  if d.streaming:
    return StreamSource(documents, column, tokenizer, d.seq_len, config.seed, split, name)
  tokens = TokenColumn(tokenize(documents, column, tokenizer, d).data.column('input_ids'))
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
  validation documents held out), for fitting a tokenizer."""
  corpus = parse_source(data.source)
  if corpus.kind == 'synthetic':
    return (' '.join(s.text for s in synthetic.document(seed, i)) for i in itertools.count())
  documents, column = load_documents(corpus, data)
  if not data.streaming and not data.validation_source:
    documents = documents.select(held_out(range(len(documents)), data.validation_fraction,
                                          'train'))
  return (text or '' for batch in documents.iter(batch_size=1000) for text in batch[column])
