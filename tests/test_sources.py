"""Corpora: local files, HF datasets, packing, sharding, resuming and bad input.

Every corpus is written here (the HF Hub is stood in for by a `save_to_disk`
folder and a Hub-layout Parquet folder that `datasets.load_dataset` reads
offline); nothing is mocked.
"""

import json
import logging
import os
import subprocess
import sys

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers

from sctd_jax import config as config_lib
from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 32


def docs(count, first=0):
  return [' '.join(s.text for s in synthetic.document(7, i)) for i in range(first, first + count)]


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.fit_tokenizer(docs(300), vocab_size=300)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """90 documents in three files, one of each type, plus an empty document."""
  root = tmp_path_factory.mktemp('corpus')
  text = docs(90)
  (root / 'a.txt').write_text('\n\n\n'.join(t.replace('. ', '.\n') for t in text[:30]) + '\n')
  with open(root / 'b.jsonl', 'w') as f:
    for t in text[30:60]:
      f.write(json.dumps({'text': t, 'id': 1}) + '\n\n')
    f.write(json.dumps({'text': None}) + '\n')
  pq.write_table(pa.table({'text': text[60:]}), root / 'c.parquet', row_group_size=7)
  return root, text


def config_for(source, tmp_path, **overrides):
  return tiny_config(**{'data.source': source, 'data.cache_dir': str(tmp_path / 'cache'),
                        'data.seq_len': SEQ, 'data.max_predictions': 5, 'data.num_proc': 1,
                        'data.validation_fraction': 0.1, **overrides})


def expected_chunks(tok, texts):
  """The documents' ids joined by [SEP], cut into seq_len - 2 chunks."""
  stream = []
  for ids in tok(texts, add_special_tokens=False)['input_ids']:
    stream += [tok.sep_token_id, *ids] if ids else []
  stream = stream[1:]
  room = SEQ - 2
  return sorted(tuple(stream[i:i + room]) for i in range(0, len(stream), room))


def unframe(tok, row):
  n = int((row != tok.pad_token_id).sum())
  assert row[0] == tok.cls_token_id and row[n - 1] == tok.sep_token_id
  assert (row[n:] == tok.pad_token_id).all()
  return tuple(row[1:n - 1])


def epoch_blocks(source):
  return [source.block(i) for i in range(source.num_blocks)]


def test_each_file_type_reads_its_documents(corpus):
  root, text = corpus
  read = [d['text'] for d in sources.read_files(
      sources.match_files(str(root / '*')), 'text')]
  # Lines of a .txt document are kept, blank runs separate documents, a
  # missing value is an empty document.
  assert [' '.join(t.split()) for t in read] == text[:60] + [''] + text[60:]


def test_packing_loses_no_token_and_frames_every_block(corpus, tok, tmp_path, caplog):
  root, text = corpus
  config = config_for(f'files:{root}/*', tmp_path)
  with caplog.at_level(logging.INFO):
    train = sources.make_source(config, tok, 'train')
    val = sources.make_source(config, tok, 'validation')
  # The last 10% of the 91 documents (10) are held out; the empty one is in train.
  got = [[unframe(tok, b) for b in epoch_blocks(s)] for s in (train, val)]
  assert sorted(got[0]) == expected_chunks(tok, text[:80])
  assert sorted(got[1]) == expected_chunks(tok, text[80:])
  assert sum(len(b) < SEQ - 2 for b in got[0]) == 1   # only the final block is partial
  for texts, empty, source in ((text[:80], 1, train), (text[80:], 0, val)):
    tokens = sum(map(len, tok(texts, add_special_tokens=False)['input_ids']))
    last = (tokens + len(texts) - 1) % (SEQ - 2)
    assert (f'{len(texts)} documents ({empty} empty, skipped), {tokens} tokens, '
            f'{source.num_blocks} blocks of {SEQ - 2} tokens with [SEP] between '
            f'documents, {last} tokens in the final partial block' in caplog.text)


def test_epochs_reshuffle_the_same_blocks(corpus, tok, tmp_path):
  root, _ = corpus
  source = sources.make_source(config_for(f'files:{root}/*', tmp_path), tok)
  n = source.num_blocks
  first, second = epoch_blocks(source), [source.block(n + i) for i in range(n)]
  key = lambda rows: sorted(map(tuple, rows))
  assert key(first) == key(second)
  assert not np.array_equal(np.stack(first), np.stack(second))


def test_hf_sources_match_the_same_documents_as_files(corpus, tok, tmp_path):
  root, text = corpus
  hub = tmp_path / 'hub'   # Hub layout: data/{split}-*.parquet
  (hub / 'data').mkdir(parents=True)
  pq.write_table(pa.table({'body': text[:50]}), hub / 'data' / 'train-00000-of-00001.parquet')
  pq.write_table(pa.table({'body': text[50:]}),
                 hub / 'data' / 'validation-00000-of-00001.parquet')
  datasets.Dataset.from_dict({'body': text}).save_to_disk(str(tmp_path / 'saved'))
  overrides = {'data.text_column': 'body', 'data.validation_source': f'hf:{hub}@validation'}
  config = config_for(f'hf:{hub}', tmp_path, **overrides)
  blocks = lambda c, split: sorted(unframe(tok, b) for b in epoch_blocks(
      sources.make_source(c, tok, split)))
  assert blocks(config, 'train') == expected_chunks(tok, text[:50])
  assert blocks(config, 'validation') == expected_chunks(tok, text[50:])
  saved = config_for(f'hf:{tmp_path}/saved', tmp_path, **{'data.text_column': 'body'})
  assert blocks(saved, 'train') == expected_chunks(tok, text[:81])


def test_streaming_packs_like_the_cached_path_and_resumes(corpus, tok, tmp_path):
  root, text = corpus
  config = config_for(f'files:{root}/*.parquet', tmp_path, **{
      'data.streaming': True, 'data.validation_source': f'files:{root}/b.jsonl'})
  source = sources.make_source(config, tok)
  chunks = expected_chunks(tok, text[60:])
  first = [unframe(tok, source.block(i)) for i in range(2 * len(chunks))]
  # The documents of one epoch in a shuffled order: the same tokens, cut elsewhere.
  flat = lambda blocks: sorted(t for b in blocks for t in b)
  assert flat(first[:len(chunks)]) == flat(chunks)
  assert first[:len(chunks)] != first[len(chunks):2 * len(chunks)]
  with pytest.raises(ValueError, match='only reads forward'):
    source.block(2)
  run = pipeline.batches(config, tok)
  run = [next(run) for _ in range(3)]
  resumed = next(pipeline.batches(config, tok, position=2 * config.train.batch_size))
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], run[2][key])


@pytest.mark.parametrize('count', [2, 4])
def test_process_shards_are_disjoint_and_complete(corpus, tok, tmp_path, count):
  root, _ = corpus
  config = config_for(f'files:{root}/*', tmp_path, **{'train.batch_size': 8})
  whole = pipeline.batches(config, tok, position=24, process_index=0, process_count=1)
  shards = [pipeline.batches(config, tok, position=24, process_index=i, process_count=count)
            for i in range(count)]
  for _ in range(3):
    want = next(whole)
    parts = [next(s) for s in shards]
    for key in want:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), want[key])
  with pytest.raises(config_lib.ConfigError, match='train.batch_size'):
    pipeline.batches(config, tok, process_index=0, process_count=3)


def test_resume_crosses_epochs_exactly(corpus, tok, tmp_path):
  root, _ = corpus
  config = config_for(f'files:{root}/*', tmp_path, **{'train.batch_size': 16})
  source = sources.make_source(config, tok)
  steps = source.num_blocks // 16 + 2   # past the end of epoch 0
  run = pipeline.batches(config, tok)
  run = [next(run) for _ in range(steps)]
  for step in (1, steps - 2, steps - 1):
    resumed = next(pipeline.batches(config, tok, position=step * 16))
    for key in resumed:
      np.testing.assert_array_equal(resumed[key], run[step][key])


# The forked tokenizing processes run no JAX code.
@pytest.mark.filterwarnings('ignore:os.fork')
def test_tokens_are_cached_per_corpus_and_tokenizer(corpus, tok, tmp_path):
  root, text = corpus
  files = tmp_path / 'files'
  files.mkdir()
  (files / 'a.txt').write_text('\n\n'.join(text[:20]))
  config = config_for(f'files:{files}/*.txt', tmp_path, **{'data.num_proc': 2})
  tokenize = lambda t: sources.tokenize(
      *sources.load_documents(sources.parse_source(config.data.source), config.data),
      t, config.data).cache_files
  cached = tokenize(tok)
  assert len(cached) == 2 and cached == tokenize(tok)
  other = tokenizer_lib.fit_tokenizer(docs(50), vocab_size=200)
  assert tokenize(other) != cached
  (files / 'a.txt').write_text('\n\n'.join(text[:21]))   # a changed file
  assert tokenize(tok) != cached


def test_tokenizer_cli_and_config_fit_the_same_vocabulary(corpus, tmp_path):
  """By default, the CLI fits what a run with the base config's data keys
  fits (the same documents: the last 1% held out)."""
  root, text = corpus
  # The last document, a word no other has, is the validation split.
  held = tmp_path / 'held.jsonl'
  held.write_text(''.join(json.dumps({'text': t}) + '\n'
                          for t in [*text[:60], 'zyzzyva ' * 50]))
  out = tmp_path / 'vocab'
  run = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.data.tokenizer', '--source', f'files:{held}',
       '--out', str(out), '--vocab_size', '250'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  cli = transformers.AutoTokenizer.from_pretrained(out)
  base = config_lib.base_config().data
  fitted = tokenizer_lib.load_or_fit_tokenizer(config_for(
      f'files:{held}', tmp_path, **{
          'data.vocab_size': 250, 'data.tokenizer_docs': base.tokenizer_docs,
          'data.validation_fraction': base.validation_fraction}), str(tmp_path / 'run1'))
  # The same vocabulary, ties included (the fit does not depend on the process).
  assert len(cli) == 250 and cli.get_vocab() == fitted.get_vocab()
  assert 'zyzzyva' not in cli.get_vocab()
  ids = cli(text[31], add_special_tokens=False)['input_ids']
  assert cli.unk_token_id not in ids
  # data.tokenizer=DIR loads it into the run's workdir.
  loaded = tokenizer_lib.load_or_fit_tokenizer(
      config_for(f'files:{root}/*', tmp_path, **{'data.tokenizer': str(out)}),
      str(tmp_path / 'run2'))
  assert loaded.get_vocab() == cli.get_vocab()
  assert (tmp_path / 'run2' / 'tokenizer' / 'tokenizer.json').exists()


# ------------------------------------------------------------- bad input
def write(tmp_path, name, content):
  path = tmp_path / 'bad' / name
  path.parent.mkdir(exist_ok=True)
  (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
  return str(path)


@pytest.mark.parametrize('name, content, message', [
    ('missing.txt', None, 'no file matches'),
    ('notes.md', 'text', "not one of \\('.txt'"),
    ('empty.txt', '\n\n  \n', 'has no text'),
    ('short.jsonl', '{"text": "a cow."}\n{"text": "the hen."}\n', 'fewer than one block'),
    ('broken.jsonl', '{"text": "a cow."}\n{"text": \n', 'broken.jsonl:2: not a JSON object'),
    ('field.jsonl', '{"body": "a cow."}\n', "field.jsonl:1: no field 'text'"),
    ('number.jsonl', '{"text": 3}\n', "field 'text' .* holds int"),
])
def test_bad_files_fail_naming_the_file(tok, tmp_path, name, content, message):
  path = str(tmp_path / 'bad' / name) if content is None else write(tmp_path, name, content)
  config = config_for(f'files:{path}', tmp_path)
  with pytest.raises(sources.DataError, match=message) as error:
    pipeline.batches(config, tok)
  assert name in str(error.value)


def test_a_missing_validation_source_is_named_by_its_key(tok, tmp_path):
  good = write(tmp_path, 'good.txt', '\n\n'.join(docs(30)))
  config = config_for(f'files:{good}', tmp_path, **{
      'data.validation_source': f'files:{tmp_path}/nothing/*.txt'})
  with pytest.raises(sources.DataError, match="config key data.validation_source='files:"):
    pipeline.batches(config, tok, split='validation')


def test_a_corpus_without_text_fits_no_tokenizer(tmp_path):
  """Not a tokenizer of special tokens only, which a rerun would reuse."""
  path = write(tmp_path, 'blank.txt', '\n\n  \n')
  with pytest.raises(config_lib.ConfigError, match='data.source=.*no text to fit a vocabulary'):
    tokenizer_lib.load_or_fit_tokenizer(config_for(f'files:{path}', tmp_path),
                                        str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'tokenizer').exists()


def test_parquet_and_hf_without_the_text_column_are_named(tok, tmp_path):
  path = tmp_path / 'x.parquet'
  pq.write_table(pa.table({'body': ['a cow.']}), path)
  with pytest.raises(sources.DataError, match="x.parquet: no column 'text'"):
    sources.make_source(config_for(f'files:{path}', tmp_path), tok)
  datasets.DatasetDict(train=datasets.Dataset.from_dict({'body': ['a cow.']})).save_to_disk(
      str(tmp_path / 'saved'))
  with pytest.raises(sources.DataError, match="no column 'text' \\(data.text_column\\)"):
    sources.make_source(config_for(f'hf:{tmp_path}/saved', tmp_path), tok)
  with pytest.raises(sources.DataError, match='could not be loaded'):
    sources.make_source(config_for(f'hf:{tmp_path}/saved@test', tmp_path), tok)


def test_undecodable_bytes_are_replaced_and_counted(tok, tmp_path, caplog):
  text = ' '.join(docs(3)).encode()
  path = write(tmp_path, 'latin.txt', text + b' caf\xe9 \xff\xfe end.\n\n' + text)
  with caplog.at_level(logging.WARNING):
    read = [d['text'] for d in sources.read_files([path], 'text')]
  assert len(read) == 2 and 'caf\ufffd \ufffd\ufffd end.' in read[0]
  assert f'{path}: 3 undecodable byte sequence(s)' in caplog.text


def test_tokenizer_without_mask_is_refused_by_name(tok, tmp_path):
  broken = transformers.BertTokenizerFast(tokenizer_object=tok.backend_tokenizer, mask_token=None)
  broken.mask_token = None
  broken.save_pretrained(tmp_path / 'nomask')
  config = config_for('synthetic', tmp_path, **{'data.tokenizer': str(tmp_path / 'nomask')})
  with pytest.raises(config_lib.ConfigError, match='data.tokenizer.*mask_token'):
    tokenizer_lib.load_or_fit_tokenizer(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'tokenizer').exists()
  with pytest.raises(config_lib.ConfigError, match="data.tokenizer='/no/such'"):
    tokenizer_lib.load_or_fit_tokenizer(
        config_for('synthetic', tmp_path, **{'data.tokenizer': '/no/such'}), str(tmp_path / 'r'))


@pytest.mark.parametrize('overrides, key', [
    ({'data.source': 'hub:wiki'}, 'data.source'),
    ({'data.source': 'files:'}, 'data.source'),
    ({'data.validation_source': 'valid'}, 'data.validation_source'),
    ({'data.source': 'hf:x', 'data.streaming': True}, 'data.validation_source'),
    ({'data.source': 'hf:x', 'data.validation_fraction': 0.0}, 'data.validation_fraction'),
    ({'data.num_proc': 0}, 'data.num_proc'),
    ({'data.tokenizer_docs': -2}, 'data.tokenizer_docs'),
])
def test_bad_data_keys_are_named(overrides, key):
  with pytest.raises(config_lib.ConfigError, match=key):
    config_lib.validate(tiny_config(**overrides))
