"""BERT-large (24 layers, hidden 1024, 16 heads) with the paper's recipe;
token dropping keeps layers 0-10 full, 11 cross, 12-22 kept-only, 23 full."""

from sctd_jax import config as config_lib


def get_config():
  return config_lib.bert_large_config()
