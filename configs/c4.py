"""BERT-base with the paper's recipe (configs/bert_base.py) on C4 (English),
streamed from the Hub: nothing is cached, each process reads its own shards,
and a resume continues from the checkpointed stream state (docs/data.md).

python -m sctd_jax.train --config configs/c4.py --workdir runs/c4

Offline, point both names at a local copy in the same format (allenai/c4's
layout: en/c4-train.*.json.gz and en/c4-validation.*.json.gz, with the
README's `configs` section), e.g. --config.data.source=hf:/data/c4:en
--config.data.validation_source=hf:/data/c4:en@validation.
"""

from sctd_jax import config as config_lib

C4 = 'hf:allenai/c4:en'


def get_config():
  c = config_lib.base_config()  # The base values are the paper's BERT-base.
  c.data.update(source=C4, validation_source=f'{C4}@validation', streaming=True)
  return c
