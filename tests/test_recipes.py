"""The paper's corpora as shipped in configs/wikibooks.py (Wikipedia +
BookCorpus, mixed) and configs/c4.py (C4, streamed): their Hub names, and
each run end to end through the CLI on local folders in the Hub's formats,
with only the dataset name swapped for the folder."""

import gzip
import json
import os
import runpy
import subprocess
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from sctd_jax import config as config_lib
from sctd_jax.data import synthetic
from test_train import ROOT

TINY = ['--config.model.hidden_size=32', '--config.model.num_layers=4',
        '--config.model.num_heads=2', '--config.model.intermediate_size=64',
        '--config.model.max_position_embeddings=32', '--config.data.seq_len=32',
        '--config.data.max_predictions=5', '--config.data.vocab_size=300',
        '--config.data.tokenizer_docs=200', '--config.train.batch_size=4',
        '--config.train.num_steps=3', '--config.train.warmup_steps=1',
        '--config.train.log_every=1', '--config.train.eval_every=3',
        '--config.train.checkpoint_every=3', '--config.train.eval_batches=1',
        '--config.drift.sentences=0']


def texts(seed, count):
  return [' '.join(s.text for s in synthetic.document(seed, i)) for i in range(count)]


def load(name):
  return runpy.run_path(os.path.join(ROOT, 'configs', f'{name}.py'))['get_config']()


def test_recipes_name_the_hub_corpora():
  wikibooks, c4 = load('wikibooks'), load('c4')
  assert wikibooks.data.sources == ('hf:wikimedia/wikipedia:20231101.en=3;'
                                    'hf:bookcorpus/bookcorpus=1')
  assert (c4.data.source, c4.data.validation_source, c4.data.streaming) == (
      'hf:allenai/c4:en', 'hf:allenai/c4:en@validation', True)
  for config in (wikibooks, c4):
    config_lib.validate(config)
    assert (config.train.num_steps, config.data.seq_len) == (250_000, 512)


def train(workdir, config, *overrides):
  run = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.train', '--config', f'configs/{config}.py',
       '--workdir', str(workdir), *TINY, *overrides],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == [1, 2, 3]
  assert all(r['loss'] > 0 for r in rows) and 'val_mlm_full' in rows[-1]
  return json.load(open(workdir / 'config.json'))


def test_wikipedia_and_bookcorpus_from_local_copies(tmp_path):
  # wikimedia/wikipedia's columns, written by save_to_disk.
  wiki = tmp_path / 'wikipedia'
  pages = texts(1, 80)
  datasets.Dataset.from_dict({
      'id': [str(i) for i in range(80)], 'url': [f'https://en.wikipedia.org/{i}' for i in range(80)],
      'title': [f'page {i}' for i in range(80)], 'text': pages}).save_to_disk(str(wiki))
  # bookcorpus/bookcorpus: parquet shards of one `text` column, a sentence a row.
  books = tmp_path / 'bookcorpus'
  books.mkdir()
  sentences = [s.text for i in range(60) for s in synthetic.document(2, i)]
  for shard in range(2):
    pq.write_table(pa.table({'text': sentences[shard::2]}),
                   books / f'train-{shard:05d}-of-00002.parquet')
  sources = load('wikibooks').data.sources.replace('wikimedia/wikipedia', str(wiki)).replace(
      'bookcorpus/bookcorpus', str(books))
  assert sources == f'hf:{wiki}:20231101.en=3;hf:{books}=1'
  saved = train(tmp_path / 'run', 'wikibooks', f'--config.data.sources={sources}',
                f'--config.data.cache_dir={tmp_path / "cache"}')
  assert saved['data']['sources'] == sources
  # Each corpus was tokenized into the cache: one token cache per corpus (in
  # a shard per process with data.num_proc=-1 on several cores).
  caches = [f for f in os.listdir(tmp_path / 'cache') if f.startswith('tokens-')]
  assert len({f.split('_')[0] for f in caches}) == 2, caches


def test_c4_streamed_from_a_local_copy(tmp_path):
  # allenai/c4's layout: json.gz shards per split under en/, and the
  # README's `configs` section that maps the `en` config to them.
  c4 = tmp_path / 'c4'
  (c4 / 'en').mkdir(parents=True)
  for split, shards, seed in (('train', 2, 3), ('validation', 1, 4)):
    for shard in range(shards):
      with gzip.open(c4 / 'en' / f'c4-{split}.{shard:05d}-of-{shards:05d}.json.gz', 'wt') as f:
        for i, text in enumerate(texts(seed + 10 * shard, 40)):
          f.write(json.dumps({'text': text, 'timestamp': '2019-04-25T12:57:54Z',
                              'url': f'https://example.com/{i}'}) + '\n')
  (c4 / 'README.md').write_text(
      '---\nconfigs:\n- config_name: en\n  data_files:\n'
      '  - split: train\n    path: en/c4-train.*.json.gz\n'
      '  - split: validation\n    path: en/c4-validation.*.json.gz\n---\n# C4, a local copy\n')
  config = load('c4')
  source = config.data.source.replace('allenai/c4', str(c4))
  validation = config.data.validation_source.replace('allenai/c4', str(c4))
  saved = train(tmp_path / 'run', 'c4', f'--config.data.source={source}',
                f'--config.data.validation_source={validation}')
  assert (saved['data']['source'], saved['data']['validation_source']) == (
      f'hf:{c4}:en', f'hf:{c4}:en@validation')
  assert saved['data']['streaming'] is True
