"""Token importance, kept-token selection, gather and scatter (docs/design.md section 1).

Hou et al. (2022) score a token by the running MLM loss of its id: ids the
model finds hard are kept through the middle layers, easy ones are dropped.
Everything here has static shapes, so one compiled step serves every batch.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

ALLOW_SCORE = 1e4    # [CLS], [SEP], [MASK]: always kept.
DENY_SCORE = -1e4    # [PAD]: dropped first.
TIE_BREAK = 1e-3     # Scale of the random tie-breaker; scores start equal.


def init_importance(vocab_size: int, allow_ids: Sequence[int],
                    deny_ids: Sequence[int], init: float = 10.0) -> jax.Array:
  """The float32 importance table, one score per vocabulary id."""
  table = np.full((vocab_size,), init, np.float32)
  table[list(allow_ids)] = ALLOW_SCORE
  table[list(deny_ids)] = DENY_SCORE
  return jnp.asarray(table)


def select_kept(importance: jax.Array, input_ids: jax.Array, k: int,
                rng: jax.Array) -> jax.Array:
  """Indices [B, k] of the k highest-scoring positions per sequence, ascending.

  Ascending order keeps the tokens' order, so [CLS] stays at index 0."""
  noise = jax.random.uniform(rng, input_ids.shape, jnp.float32, 0.0, TIE_BREAK)
  _, kept = jax.lax.top_k(importance[input_ids] + noise, k)
  return jnp.sort(kept, axis=-1)


def gather(x: jax.Array, indices: jax.Array) -> jax.Array:
  """x[b, indices[b]] for x of shape [B, S] or [B, S, d]."""
  idx = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def scatter(full: jax.Array, indices: jax.Array, kept: jax.Array) -> jax.Array:
  """`full` [B, S, d] with rows `indices` [B, k] replaced by `kept` [B, k, d]."""
  rows = jnp.arange(full.shape[0])[:, None]
  return full.at[rows, indices].set(kept.astype(full.dtype))


def update_importance(importance: jax.Array, target_ids: jax.Array,
                      token_losses: jax.Array, weights: jax.Array,
                      beta: float) -> jax.Array:
  """EMA of each id's mean MLM loss in the batch: imp = b*imp + (1-b)*mean.

  Only real targets (weight > 0) count; duplicates of an id are averaged by
  segment sums, so the result does not depend on their order. Allow/deny ids
  keep their scores; ids absent from the batch keep theirs."""
  vocab = importance.shape[0]
  ids = target_ids.reshape(-1)
  w = (weights.reshape(-1) > 0).astype(jnp.float32)
  loss_sum = jax.ops.segment_sum(token_losses.reshape(-1) * w, ids, vocab)
  count = jax.ops.segment_sum(w, ids, vocab)
  mean_loss = loss_sum / jnp.maximum(count, 1.0)
  frozen = (importance == ALLOW_SCORE) | (importance == DENY_SCORE)
  updated = beta * importance + (1.0 - beta) * mean_loss
  return jax.lax.stop_gradient(
      jnp.where((count > 0) & ~frozen, updated, importance))


def keep_count(seq_len: int, keep_rate: float) -> int:
  """k = round(S * keep_rate), the static number of kept tokens."""
  return max(1, int(round(seq_len * keep_rate)))
