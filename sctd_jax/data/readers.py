"""Reading a corpus: what `data.source` names, and its documents as text.

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
"""

import glob
import hashlib
import json
import os
from typing import Iterator, NamedTuple

from absl import logging
import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from sctd_jax import config as config_lib

FILE_TYPES = ('.txt', '.jsonl', '.parquet')
# Bumped when the meaning of a cache changes, so old caches are not reused.
CACHE_VERSION = 1
_TEXT_FEATURES = datasets.Features({'text': datasets.Value('string')})


class DataError(config_lib.ConfigError):
  """A corpus that cannot be read or packed; the message names the file or key."""


class Corpus(NamedTuple):
  """A parsed `data.source`: kind 'synthetic', 'hf' or 'files'."""
  kind: str
  name: str = ''        # Dataset name or folder (hf), glob (files).
  config: str = ''      # Dataset config (hf).
  split: str = 'train'  # Dataset split (hf).
  key: str = 'data.source'  # The config key that named it, for errors.


def parse_source(spec: str, key: str = 'data.source') -> Corpus:
  """'synthetic' | 'hf:NAME[:CONFIG][@SPLIT]' | 'files:GLOB' -> Corpus."""
  kind, _, rest = spec.partition(':')
  if spec == 'synthetic':
    return Corpus('synthetic', key=key)
  if kind == 'files' and rest:
    return Corpus('files', rest, key=key)
  if kind == 'hf':
    name_config, _, split = rest.partition('@')
    name, _, config = name_config.partition(':')
    if name:
      return Corpus('hf', name, config, split or 'train', key)
  raise DataError(f"config key {key}={spec!r} is invalid: use 'synthetic', "
                  "'hf:NAME[:CONFIG][@SPLIT]' or 'files:GLOB'.")


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


def match_files(pattern: str, key: str = 'data.source') -> list[str]:
  """The files `pattern` (of config key `key`) matches, sorted; an error
  names what is missing or not supported."""
  paths = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
  if not paths:
    raise DataError(f"config key {key}='files:{pattern}': no file matches "
                    f'{pattern!r} (from {os.getcwd()}).')
  for path in paths:
    if os.path.splitext(path)[1] not in FILE_TYPES:
      raise DataError(f"config key {key}='files:{pattern}' matches {path}, "
                      f'which is not one of {FILE_TYPES}.')
  return paths


def cache_dir(data) -> str:
  """Where the corpus and token caches of this project live."""
  return data.cache_dir or os.path.join(datasets.config.HF_DATASETS_CACHE, 'sctd_jax')


def digest(*parts) -> str:
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def num_proc(data, items: int) -> int | None:
  n = min(os.cpu_count() if data.num_proc == -1 else data.num_proc, items)
  return n if n > 1 else None


def load_documents(corpus: Corpus, data):
  """(documents, text column) of `corpus`: a `datasets.Dataset` (or, with
  `data.streaming`, an `IterableDataset`)."""
  if corpus.kind == 'files':
    paths = match_files(corpus.name, corpus.key)
    kwargs = dict(generator=read_files, features=_TEXT_FEATURES,
                  gen_kwargs=dict(paths=paths, column=data.text_column))
    if data.streaming:
      return datasets.IterableDataset.from_generator(**kwargs), 'text'
    # Keyed by the files' names, sizes and times, as datasets keys data_files.
    stamps = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    fingerprint = digest(CACHE_VERSION, data.text_column, stamps)
    try:
      return datasets.Dataset.from_generator(
          **kwargs, cache_dir=cache_dir(data), fingerprint=fingerprint,
          num_proc=num_proc(data, len(paths))), 'text'
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
      if data.streaming:  # Shards, so that processes can split them.
        documents = documents.to_iterable_dataset(num_shards=min(len(documents), 64))
    else:
      documents = datasets.load_dataset(
          corpus.name, corpus.config or None, split=corpus.split,
          streaming=data.streaming, cache_dir=data.cache_dir or None)
  except Exception as e:  # Whatever the Hub or the loader says, named for the user.
    raise DataError(f'{describe(corpus)} could not be loaded: {e}') from e
  if documents.column_names is not None and data.text_column not in documents.column_names:
    raise DataError(f'{describe(corpus)} has no column {data.text_column!r} '
                    f'(data.text_column); it has {documents.column_names}.')
  return documents, data.text_column


def _saved_to_disk(path: str) -> bool:
  return any(os.path.isfile(os.path.join(path, name)) for name in (
      datasets.config.DATASET_STATE_JSON_FILENAME, datasets.config.DATASETDICT_JSON_FILENAME))


def describe(corpus: Corpus) -> str:
  if corpus.kind == 'hf':
    return f"hf:{corpus.name}{':' + corpus.config if corpus.config else ''}@{corpus.split}"
  return f'{corpus.kind}:{corpus.name}' if corpus.name else corpus.kind
