"""BERT-base on the paper's corpus: English Wikipedia + BookCorpus (BERT's,
section 4.1 of the paper), with the paper's recipe (configs/bert_base.py).

BERT concatenated the two corpora, i.e. mixed them in proportion to their
sizes (2,500M and 800M words): weights 3 and 1 here (`data.sources`, see
docs/data.md). Both are read from the Hub through `datasets` and tokenized
once into the cache (`data.cache_dir`; a few hundred GB of Arrow files).

python -m sctd_jax.train --config configs/wikibooks.py --workdir runs/wikibooks \\
    --config.data.cache_dir=/shared/cache

Offline, point each name at a local copy in the same format (a
`save_to_disk` folder or a folder of parquet/json files with a `text`
column): --config.data.sources='hf:/data/wiki=3;hf:/data/books=1'.
"""

from sctd_jax import config as config_lib

WIKIPEDIA = 'hf:wikimedia/wikipedia:20231101.en'
BOOKCORPUS = 'hf:bookcorpus/bookcorpus'


def get_config():
  c = config_lib.base_config()  # The base values are the paper's BERT-base.
  c.data.sources = f'{WIKIPEDIA}=3;{BOOKCORPUS}=1'
  c.data.source = ''  # Unused: data.sources names the corpora.
  c.data.num_proc = -1  # Millions of documents: tokenize on every core.
  return c
