"""data.sources: corpora mixed by weight, a pure function of the position."""

import json

import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax.data import mixture
from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from conftest import tiny_config


def docs(count, seed):
  return [' '.join(s.text for s in synthetic.document(seed, i)) for i in range(count)]


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp('mix')
  texts = {'wiki': docs(60, 1), 'books': docs(40, 2)}
  for name, text in texts.items():
    with open(root / f'{name}.jsonl', 'w') as f:
      f.writelines(json.dumps({'text': t}) + '\n' for t in text)
  return root, texts


@pytest.fixture(scope='module')
def tok():
  return tokenizer_lib.fit_tokenizer(docs(300, 7), vocab_size=300)


def config_for(tmp_path, **overrides):
  return tiny_config(**{'data.cache_dir': str(tmp_path / 'cache'), 'data.seq_len': 32,
                        'data.max_predictions': 5, 'data.validation_fraction': 0.1,
                        'data.num_proc': 1, **overrides})


def test_shares_round_by_largest_remainder():
  assert mixture.shares([3, 1], 1000).tolist() == [750, 250]
  assert mixture.shares([1, 1, 1], 1000).tolist() == [334, 333, 333]
  # 3.5, 1.75, 1.75: floors 3, 1, 1, then the two largest remainders.
  assert mixture.shares([0.5, 0.25, 0.25], 7).tolist() == [3, 2, 2]


def test_mixture_deals_each_corpus_in_its_share_and_order(corpora, tok, tmp_path):
  root, _ = corpora
  mix = f'files:{root}/wiki.jsonl=3;files:{root}/books.jsonl=1'
  source = sources.make_source(config_for(tmp_path, **{'data.sources': mix}), tok)
  alone = [sources.make_source(config_for(tmp_path, **{'data.source': f'files:{root}/{n}.jsonl'}),
                               tok) for n in ('wiki', 'books')]
  n = 2 * mixture.CHUNK
  located = [source.locate(p) for p in range(n)]
  for part, share in ((0, 750), (1, 250)):
    taken = sorted(b for k, b in located if k == part)
    assert taken == list(range(2 * share))   # Each block once, in the corpus's order.
    first_chunk = [b for k, b in located[:mixture.CHUNK] if k == part]
    assert len(first_chunk) == share
  assert [k for k, _ in located[:40]] != sorted(k for k, _ in located[:40])   # Interleaved.
  for p in (0, 1, 7, 999, 1000, 1999):
    part, block = located[p]
    np.testing.assert_array_equal(source.block(p), alone[part].block(block))
  again = sources.make_source(config_for(tmp_path, **{'data.sources': mix}), tok)
  assert again.locate(1500) == located[1500]   # Random access, no state.


def test_mixed_batches_resume_and_split_among_processes(corpora, tok, tmp_path):
  root, _ = corpora
  config = config_for(tmp_path, **{
      'data.sources': f'files:{root}/wiki.jsonl=1;files:{root}/books.jsonl=1',
      'train.batch_size': 4})
  run = pipeline.batches(config, tok)
  got = [next(run) for _ in range(3)]
  assert run.checkpoint(8) == {'position': 8}
  resumed = next(pipeline.batches(config, tok, 'train', {'position': 8}))
  halves = [next(pipeline.batches(config, tok, 'train', 8, process_index=i, process_count=2))
            for i in range(2)]
  for key in got[2]:
    np.testing.assert_array_equal(resumed[key], got[2][key])
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), got[2][key])


def test_tokenizer_fits_on_each_corpus_by_weight(corpora, tmp_path):
  root, texts = corpora
  data = config_for(tmp_path, **{
      'data.sources': f'files:{root}/wiki.jsonl=3;files:{root}/books.jsonl=1',
      'data.tokenizer_docs': 40}).data
  assert list(sources.texts(data, 0))[:40] == texts['wiki'][:30] + texts['books'][:10]


@pytest.mark.parametrize('spec, message', [
    ('files:a.jsonl', 'not SPEC=WEIGHT'),
    ('files:a.jsonl=0', 'weight > 0'),
    ('nope:x=1', 'data.sources'),
])
def test_bad_mixtures_are_named(spec, message, tok, tmp_path):
  with pytest.raises(config_lib.ConfigError, match=message):
    sources.make_source(config_for(tmp_path, **{'data.sources': spec}), tok)


def test_mixtures_refuse_streaming():
  config = tiny_config(**{'data.sources': 'files:a=1', 'data.streaming': True,
                          'data.validation_source': 'files:a'})
  with pytest.raises(config_lib.ConfigError, match='data.sources'):
    config_lib.validate(config)
