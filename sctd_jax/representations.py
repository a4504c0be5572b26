"""Sentence representations of a pretrained model, for semantic drift (paper
section 2, Figure 3) and layer-wise probing (Figures 4 and 8).

A sentence vector pools one layer's hidden states over the real tokens:
`mean` (Sentence-BERT's default pooling) or `cls` (the [CLS] state).
"""

import jax
import jax.numpy as jnp

from sctd_jax.config import POOLINGS
from sctd_jax import models


def pool(hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
  """[..., B, S, d] states -> [..., B, d] sentence vectors."""
  if pooling == 'cls':
    return hidden[..., 0, :]
  if pooling != 'mean':
    raise ValueError(f'pooling={pooling!r}: use one of {POOLINGS}.')
  weights = attention_mask.astype(jnp.float32)[..., None]
  return jnp.sum(hidden * weights, axis=-2) / jnp.maximum(jnp.sum(weights, axis=-2), 1.0)


def layer_vectors(model: models.BertForMaskedLM, params, input_ids, token_type_ids,
                  attention_mask, pooling: str = 'mean') -> jax.Array:
  """[num_layers, B, d]: every layer's sentence vector on the full path (the
  path the paper probes, also for token-dropping models)."""
  _, sown = model.apply({'params': params}, input_ids, token_type_ids,
                        attention_mask, method=model.encode, mutable='intermediates')
  hidden = jnp.stack(sown['intermediates']['bert']['encoder']['layer']['hidden_states'])
  return pool(hidden, attention_mask, pooling)


def sentence_vectors(model: models.BertForMaskedLM, params, input_ids, token_type_ids,
                     attention_mask, keep_indices=None, pooling: str = 'mean') -> jax.Array:
  """[B, d]: the last layer's sentence vector, on the token-dropping path when
  `keep_indices` is given."""
  hidden = model.apply({'params': params}, input_ids, token_type_ids, attention_mask,
                       keep_indices, method=model.encode)
  return pool(hidden, attention_mask, pooling)


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of [B, d] arrays."""
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return jnp.sum(a * b, axis=-1)
