"""The benchmark's default shape: python -m sctd_jax.bench --config configs/bench.py"""

from sctd_jax import config as config_lib


def get_config():
  return config_lib.bench_config()
