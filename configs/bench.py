"""The benchmark's default shape: python -m sctd_jax.bench --config configs/bench.py"""

from sctd_jax import bench


def get_config():
  return bench.default_config()
