"""Streaming (data.streaming): per-process shards, and a resume that continues
exactly where the checkpoint was, without reading the stream from its start."""

import json
import time

import datasets
import numpy as np
import pytest

from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from conftest import tiny_config

SEQ = 32


def docs(count, seed=7):
  return [' '.join(s.text for s in synthetic.document(seed, i)) for i in range(count)]


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.fit_tokenizer(docs(300), vocab_size=300)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A `save_to_disk` folder of 1500 documents (more than one shuffle window)."""
  path = tmp_path_factory.mktemp('saved') / 'corpus'
  datasets.Dataset.from_dict({'text': docs(1500)}).save_to_disk(str(path))
  return str(path)


def config_for(source, tmp_path, **overrides):
  return tiny_config(**{'data.source': source, 'data.streaming': True,
                        'data.validation_source': source, 'data.seq_len': SEQ,
                        'data.max_predictions': 5, 'data.cache_dir': str(tmp_path / 'cache'),
                        **overrides})


def stream(config, tok, state=None, process=None):
  return sources.make_source(config, tok, 'train', state, process)


def test_resume_is_exact_and_does_not_replay(saved, tok, tmp_path):
  config = config_for(f'hf:{saved}', tmp_path)
  source = stream(config, tok)
  epoch = None
  blocks = []
  while epoch is None or len(blocks) < epoch + 40:   # Into the second epoch.
    blocks.append(source.block(len(blocks)))
    if epoch is None and source.state(len(blocks))['epoch'] == 1:
      epoch = len(blocks)
  assert epoch > 600   # Enough blocks that a replay would show.
  for at in (3, epoch - 120, epoch - 1, epoch + 5):
    state = json.loads(json.dumps(source.state(at)))   # As the checkpoint keeps it.
    started = time.perf_counter()
    resumed = stream(config, tok, state)
    got = [resumed.block(j) for j in range(at, at + 20)]
    seconds = time.perf_counter() - started
    for a, b in zip(got, blocks[at:at + 20]):
      np.testing.assert_array_equal(a, b)
    # Only the documents after the resume point are tokenized (a window at most).
    assert resumed.documents_tokenized <= 100, (at, resumed.documents_tokenized)
    print(f'resume at block {at}: {seconds:.3f} s')


def first_epoch(source) -> list[int]:
  """The non-special tokens of the source's first epoch."""
  ids, j = [], 0
  while not j or source.state(j)['epoch'] == 0:
    ids.extend(source.block(j))
    j += 1
  return sorted(t for t in ids if t not in source.tokenizer.all_special_ids)


def test_processes_read_disjoint_shards_that_cover_the_corpus(saved, tok, tmp_path):
  config = config_for(f'hf:{saved}', tmp_path)
  whole = first_epoch(stream(config, tok, process=(0, 1)))
  halves = [first_epoch(stream(config, tok, process=(i, 2))) for i in range(2)]
  assert 0.4 < len(halves[0]) / len(halves[1]) < 2.5
  assert sorted(halves[0] + halves[1]) == whole   # Each document once.


def test_checkpoint_of_the_batches_resumes_the_next_batch(saved, tok, tmp_path):
  config = config_for(f'hf:{saved}', tmp_path, **{'train.batch_size': 8})
  run = pipeline.batches(config, tok)
  got = [next(run) for _ in range(6)]
  state = json.loads(json.dumps(run.checkpoint(4 * 8)))
  assert state['position'] == 32 and len(state['streams']) == 1
  resumed = pipeline.batches(config, tok, 'train', state)
  for want in got[4:]:
    batch = next(resumed)
    for key in want:
      np.testing.assert_array_equal(batch[key], want[key])
  with pytest.raises(Exception, match='resume with 1 processes'):
    pipeline.batches(config, tok, 'train', state, process_index=0, process_count=2)
