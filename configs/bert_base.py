"""BERT-base with the paper's pretraining recipe (section 4.1): 250K steps,
batch 1024, seq 512, AdamW (0.9, 0.999, 1e-6, wd 0.01), peak lr 2e-4, 25K
warmup then linear decay, dropout 0.1, keep_rate 0.5, Fi 10, lambda 0.05."""

from sctd_jax import config as config_lib


def get_config():
  c = config_lib.base_config()  # The base values are the paper's BERT-base.
  c.data.source = ''  # Required: --config.data.source=hf:... or files:...
  return c
