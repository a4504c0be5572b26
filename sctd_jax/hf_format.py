"""Hugging Face `BertForMaskedLM` names for our parameters.

The Flax tree mirrors HF's module names, so the mapping is mechanical: path
joined with dots; Dense `kernel` -> `weight` transposed (PyTorch stores
[out, in]); LayerNorm `scale` and Embed `embedding` -> `weight`. HF's decoder
is tied to the word embeddings and its bias to `cls.predictions.bias`.
"""

import flax.traverse_util
import numpy as np
import transformers

from sctd_jax import models

TIED = {'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight',
        'cls.predictions.decoder.bias': 'cls.predictions.bias'}


def to_hf_state_dict(params, tied: bool = True) -> dict[str, np.ndarray]:
  """NumPy arrays under HF names; `tied` adds the decoder's tied copies."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    value = np.asarray(value)
    *module, leaf = path
    if leaf == 'kernel':
      name, value = 'weight', value.T
    elif leaf in ('scale', 'embedding'):
      name = 'weight'
    else:
      name = leaf
    out['.'.join((*module, name))] = np.ascontiguousarray(value)
  if tied:
    out.update({k: out[v] for k, v in TIED.items()})
  return out


def to_hf_config(cfg: models.BertConfig) -> transformers.BertConfig:
  return transformers.BertConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.intermediate_size,
      max_position_embeddings=cfg.max_position_embeddings,
      type_vocab_size=cfg.type_vocab_size, hidden_act=cfg.hidden_act,
      hidden_dropout_prob=cfg.dropout_rate,
      attention_probs_dropout_prob=cfg.attention_dropout_rate,
      layer_norm_eps=cfg.layer_norm_eps, initializer_range=cfg.initializer_range,
      tie_word_embeddings=True)
