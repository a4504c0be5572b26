"""The step's matmul shapes timed alone in JAX and in PyTorch:

    python -m sctd_jax.bench --matmuls [--config ...]

For the CPU race (docs/performance.md): whether a gap between the two
frameworks' steps is in their matmul libraries, and in which shapes. Each
row is one product of a layer at the config's shape, forward or backward,
timed as the best of `reps` calls; torch gets as many threads as XLA:CPU
uses (this process's cores).
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def shapes(config) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
  """(name, lhs shape, rhs shape) of a layer's products; a leading third
  dimension is a batch of matrices (batch x heads in attention)."""
  m, t = config.model, config.train.batch_size * config.data.seq_len
  d, inter, s = m.hidden_size, m.intermediate_size, config.data.seq_len
  heads, head = config.train.batch_size * m.num_heads, m.hidden_size // m.num_heads
  return [('query/key/value/output x W', (t, d), (d, d)),
          ('intermediate x W', (t, d), (d, inter)),
          ('output x W', (t, inter), (inter, d)),
          ('weight gradient, intermediate', (d, t), (t, inter)),
          ('attention q k^T (batched)', (heads, s, head), (heads, head, s)),
          ('attention probs v (batched)', (heads, s, s), (heads, s, head))]


def best_seconds(fn, reps: int) -> float:
  """The fastest of `reps` calls of `fn` (which must block), after one warm-up."""
  fn()
  best = float('inf')
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def torch_with_xla_threads():
  """torch with as many intra-op threads as XLA:CPU uses (this process's
  cores), or None where it is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  return torch


def compare(config, reps: int = 30, with_torch: bool = True) -> list[dict]:
  """Per shape: GFLOP/s of jnp.matmul (jitted) and, unless `with_torch` is
  off or torch is missing, of torch.matmul."""
  torch = torch_with_xla_threads() if with_torch else None
  rng = np.random.default_rng(0)
  product = jax.jit(jnp.matmul)
  rows = []
  for name, a_shape, b_shape in shapes(config):
    a = rng.standard_normal(a_shape, np.float32)
    b = rng.standard_normal(b_shape, np.float32)
    flops = 2 * np.prod(a_shape) * b_shape[-1]
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    row = dict(product=name, lhs=list(a_shape), rhs=list(b_shape),
               jax_gflops=flops / best_seconds(
                   lambda: product(ja, jb).block_until_ready(), reps) / 1e9)
    if torch is not None:
      ta, tb = torch.from_numpy(a), torch.from_numpy(b)
      row['torch_gflops'] = flops / best_seconds(lambda: torch.matmul(ta, tb), reps) / 1e9
    rows.append(row)
  return rows


def format_table(rows: list[dict]) -> str:
  torch_columns = f'{"torch":>8}{"jax/torch":>11}' if 'torch_gflops' in rows[0] else ''
  lines = [f'{"product":<32}{"lhs":>16}{"rhs":>16}{"jax GFLOP/s":>13}' + torch_columns]
  for r in rows:
    torch_rate = r.get('torch_gflops')
    lines.append(f'{r["product"]:<32}{"x".join(map(str, r["lhs"])):>16}'
                 f'{"x".join(map(str, r["rhs"])):>16}{r["jax_gflops"]:>13.1f}'
                 + (f'{torch_rate:>8.1f}{r["jax_gflops"] / torch_rate:>11.2f}'
                    if torch_rate else ''))
  return '\n'.join(lines)
