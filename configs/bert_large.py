"""BERT-large (24 layers, hidden 1024, 16 heads) with the paper's recipe;
token dropping keeps layers 0-10 full, 11 cross, 12-22 kept-only, 23 full."""

from sctd_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.model.update(hidden_size=1024, num_layers=24, num_heads=16,
                 intermediate_size=4096)
  c.data.source = ''  # Required: --config.data.source=hf:... or files:...
  return c
