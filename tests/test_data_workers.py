"""data.workers: batches built in worker processes are those of one process."""

import json

import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax.data import pipeline
from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from conftest import tiny_config


def docs(count, seed):
  return [' '.join(s.text for s in synthetic.document(seed, i)) for i in range(count)]


def test_batches_are_the_same_with_any_number_of_workers(tmp_path):
  for name, seed in (('wiki', 1), ('books', 2)):
    with open(tmp_path / f'{name}.jsonl', 'w') as f:
      f.writelines(json.dumps({'text': t}) + '\n' for t in docs(40, seed))
  tok = tokenizer_lib.fit_tokenizer(docs(200, 7), vocab_size=300)
  config = tiny_config(**{
      'data.cache_dir': str(tmp_path / 'cache'), 'data.seq_len': 32, 'data.max_predictions': 5,
      'data.sources': f'files:{tmp_path}/wiki.jsonl=3;files:{tmp_path}/books.jsonl=1',
      'train.batch_size': 8})
  # Several epochs of the smaller corpus in 12 batches: epoch boundaries too.
  alone = pipeline.batches(config, tok)
  want = [next(alone) for _ in range(12)]
  two = pipeline.batches(config, tok, workers=2)
  resumed = pipeline.batches(config, tok, position=5 * 8, workers=1)
  for i, batch in enumerate(want):
    got = next(two)
    for key in batch:
      np.testing.assert_array_equal(got[key], batch[key], err_msg=f'batch {i} {key}')
    if i >= 5:
      np.testing.assert_array_equal(next(resumed)['input_ids'], batch['input_ids'])
  assert not np.array_equal(want[0]['input_ids'], want[1]['input_ids'])
  two.close()
  resumed.close()


def test_a_stream_takes_no_workers():
  config = tiny_config(**{'data.source': 'files:x.jsonl', 'data.streaming': True,
                          'data.validation_source': 'files:y.jsonl', 'data.workers': 2})
  with pytest.raises(config_lib.ConfigError, match='data.workers=2'):
    config_lib.validate(config)
