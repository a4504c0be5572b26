"""Batches from a position that is not a multiple of the batch (a run resumed
with another batch size), and an error raised inside the prefetch thread."""

import itertools
import re

import numpy as np
import pytest
import transformers

from conftest import tiny_config
from sctd_jax.data import pipeline
from sctd_jax.data import synthetic


@pytest.fixture(scope='module')
def tokenizer():
  """A word-level vocabulary of the synthetic grammar: no tokenizer fit."""
  words = sorted({w for d in range(50) for s in synthetic.document(0, d)
                  for w in re.findall(r'\w+|[^\w\s]', s.text.lower())})
  vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + words
  return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def _rows(batches, n):
  """The first n batches' rows, concatenated per key."""
  taken = list(itertools.islice(batches, n))
  return {k: np.concatenate([b[k] for b in taken]) for k in taken[0]}


def test_a_position_between_batches_starts_at_that_sample(tokenizer):
  config = tiny_config(**{'model.vocab_size': len(tokenizer)})   # batch 4
  stream = _rows(pipeline.batches(config, tokenizer, position=0), 4)    # samples 0-15
  resumed = _rows(pipeline.batches(config, tokenizer, position=6), 2)   # samples 6-13
  assert stream['input_ids'].shape == (16, 16)
  for key in stream:
    np.testing.assert_array_equal(resumed[key], stream[key][6:14], err_msg=key)
  # Process 1 of 2 holds the second half of each global batch: samples 8-9.
  half = next(pipeline.batches(config, tokenizer, position=6, process_index=1,
                               process_count=2))
  np.testing.assert_array_equal(half['input_ids'], stream['input_ids'][8:10])


def test_an_error_in_the_prefetch_thread_reaches_the_consumer():
  def items():
    yield 1
    yield 2
    raise ValueError('corpus line 3 is not JSON')

  got = []
  with pytest.raises(ValueError, match='corpus line 3 is not JSON'):
    for item in pipeline.Prefetched(items(), 1):
      got.append(item)
  assert got == [1, 2]   # the items before the error, in order
  with pytest.raises(KeyError):
    next(pipeline.Prefetched(({}[k] for k in ['missing']), 2))
