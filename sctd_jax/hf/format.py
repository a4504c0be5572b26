"""Hugging Face `BertForMaskedLM` names for our parameters, both directions.

The Flax tree mirrors HF's module names, so the mapping is mechanical: path
joined with dots; Dense `kernel` -> `weight` transposed (PyTorch stores
[out, in]); LayerNorm `scale` and Embed `embedding` -> `weight`. HF's decoder
is tied to the word embeddings and its bias to `cls.predictions.bias`.

`hf_bert_shapes` lists the tensors HF builds from a config, written from HF's
`modeling_bert.py` rather than derived from our tree, so that checking a
conversion against it tests the mapping instead of restating it (and needs
no torch; tests/test_export.py pins it to HF's PyTorch model).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import flax.traverse_util
import jax
import numpy as np
import transformers

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import models
from sctd_jax import scan_layers
from sctd_jax import step as step_lib

TIED = {'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight',
        'cls.predictions.decoder.bias': 'cls.predictions.bias'}
# In BertModel and the classifiers, not in BertForMaskedLM.
POOLER = ('bert.pooler.dense.weight', 'bert.pooler.dense.bias')

# config.model key (and models.BertConfig field) -> HF BertConfig field.
CONFIG_FIELDS = {
    'vocab_size': 'vocab_size', 'hidden_size': 'hidden_size',
    'num_layers': 'num_hidden_layers', 'num_heads': 'num_attention_heads',
    'intermediate_size': 'intermediate_size',
    'max_position_embeddings': 'max_position_embeddings',
    'type_vocab_size': 'type_vocab_size', 'hidden_act': 'hidden_act',
    'dropout_rate': 'hidden_dropout_prob',
    'attention_dropout_rate': 'attention_probs_dropout_prob',
    'layer_norm_eps': 'layer_norm_eps', 'initializer_range': 'initializer_range'}
# HF config values other than these change the computation in ways our BERT
# does not implement.
REQUIRED_CONFIG = {'model_type': 'bert', 'position_embedding_type': 'absolute',
                   'is_decoder': False, 'add_cross_attention': False,
                   'tie_word_embeddings': True}

# Older checkpoints (bert-base-uncased) name LayerNorm params as TF did; HF
# renames them on load, and so do we.
LEGACY_SUFFIXES = {'.gamma': '.weight', '.beta': '.bias'}
# Not parameters of BertForMaskedLM: BertForPreTraining's next-sentence head
# and a buffer older HF versions saved.
IGNORED = re.compile(r'^cls\.seq_relationship\.|(^|\.)position_ids$')
# A bare BertModel (sentence encoders, distilled BERTs) saves its tensors
# without the `bert.` prefix the heads' models add.
BARE_MODULES = ('embeddings.', 'encoder.', 'pooler.')
MLM_HEAD = 'cls.predictions.'


class FormatError(cli.UserError):
  """A folder, checkpoint or tensor set that cannot be read as or written to
  a BERT of ours or HF's; the message names the file, tensor or field."""


def hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
  """HF name of the Flax param at `path`, and whether HF stores it transposed."""
  *module, leaf = path
  name = 'weight' if leaf in ('kernel', 'scale', 'embedding') else leaf
  return '.'.join((*module, name)), leaf == 'kernel'


def to_hf_state_dict(params, tied: bool = True) -> dict[str, np.ndarray]:
  """NumPy arrays under HF names, from params in any layout (scanned runs
  are unstacked first); `tied` adds the decoder's tied copies."""
  out = {}
  per_layer = scan_layers.unstack_layers(params)
  for path, value in flax.traverse_util.flatten_dict(per_layer).items():
    name, transposed = hf_name(path)
    value = np.asarray(value)
    out[name] = np.ascontiguousarray(value.T if transposed else value)
  if tied:
    out.update({k: out[v] for k, v in TIED.items()})
  return out


def hf_bert_shapes(hf_config) -> dict[str, tuple[int, ...]]:
  """Names and shapes of HF `BertForMaskedLM`'s tensors for `hf_config`,
  without the tied decoder copies (HF's own checkpoints leave them out)."""
  d, inner = hf_config.hidden_size, hf_config.intermediate_size
  dense = lambda n_out, n_in: {'weight': (n_out, n_in), 'bias': (n_out,)}
  norm = {'weight': (d,), 'bias': (d,)}
  modules = {
      'bert.embeddings.word_embeddings': {'weight': (hf_config.vocab_size, d)},
      'bert.embeddings.position_embeddings': {
          'weight': (hf_config.max_position_embeddings, d)},
      'bert.embeddings.token_type_embeddings': {'weight': (hf_config.type_vocab_size, d)},
      'bert.embeddings.LayerNorm': norm,
      'cls.predictions': {'bias': (hf_config.vocab_size,)},
      'cls.predictions.transform.dense': dense(d, d),
      'cls.predictions.transform.LayerNorm': norm,
  }
  for i in range(hf_config.num_hidden_layers):
    layer = f'bert.encoder.layer.{i}'
    modules.update({
        f'{layer}.attention.self.query': dense(d, d),
        f'{layer}.attention.self.key': dense(d, d),
        f'{layer}.attention.self.value': dense(d, d),
        f'{layer}.attention.output.dense': dense(d, d),
        f'{layer}.attention.output.LayerNorm': norm,
        f'{layer}.intermediate.dense': dense(inner, d),
        f'{layer}.output.dense': dense(d, inner),
        f'{layer}.output.LayerNorm': norm,
    })
  return {f'{module}.{leaf}': shape for module, leaves in modules.items()
          for leaf, shape in leaves.items()}


def pooler_shapes(hf_config) -> dict[str, tuple[int, ...]]:
  d = hf_config.hidden_size
  return dict(zip(POOLER, [(d, d), (d,)]))


def _listing(names) -> str:
  names = sorted(names)
  more = f' ... ({len(names)} in all)' if len(names) > 8 else ''
  return ', '.join(names[:8]) + more


def check_tensors(tensors: dict, expected: dict, optional=()) -> None:
  """Raises FormatError naming every missing, unused or mis-shaped tensor."""
  problems = []
  missing = set(expected) - set(tensors) - set(optional)
  unused = set(tensors) - set(expected)
  if missing:
    problems.append(f'missing: {_listing(missing)}')
  if unused:
    problems.append(f'unused: {_listing(unused)}')
  problems += [f'{name} has shape {tuple(tensors[name].shape)}, HF expects '
               f'{expected[name]}' for name in sorted(set(tensors) & set(expected))
               if tuple(tensors[name].shape) != tuple(expected[name])]
  if problems:
    raise FormatError('The tensors do not match HF BertForMaskedLM: '
                      + '; '.join(problems))


def to_hf_config(cfg: models.BertConfig) -> transformers.BertConfig:
  return transformers.BertConfig(
      **{hf: getattr(cfg, ours) for ours, hf in CONFIG_FIELDS.items()},
      tie_word_embeddings=True)


def model_config_values(hf_config: dict) -> dict:
  """The config.model values of an HF BERT config.json; refuses, naming the
  field, a config our BERT cannot represent."""
  hf = {**transformers.BertConfig().to_dict(), **hf_config}
  for field, supported in REQUIRED_CONFIG.items():
    if field in hf_config and hf_config[field] != supported:
      raise FormatError(f'config.json has {field}={hf_config[field]!r}; only '
                        f'{supported!r} is supported.')
  if hf['hidden_act'] not in models.ACTIVATIONS:
    raise FormatError(f'config.json has hidden_act={hf["hidden_act"]!r}; '
                      f'supported: {sorted(models.ACTIVATIONS)}.')
  if hf['hidden_size'] % hf['num_attention_heads']:
    raise FormatError(f'config.json has num_attention_heads='
                      f'{hf["num_attention_heads"]}, which does not divide '
                      f'hidden_size={hf["hidden_size"]}.')
  return {ours: hf[theirs] for ours, theirs in CONFIG_FIELDS.items()}


def from_hf_config(hf_config: dict) -> models.BertConfig:
  """Our model config for an HF BERT config.json, with the defaults a
  training config would add (float32 compute, the paper's drop layers)."""
  config = config_lib.base_config()
  config.model.update(model_config_values(hf_config))
  return step_lib.model_config(config, config.model.vocab_size)


class Imported(NamedTuple):
  params: Any
  fresh: tuple[str, ...]     # HF names absent from the checkpoint, freshly initialised.
  ignored: tuple[str, ...]   # Checkpoint tensors BertForMaskedLM has no use for.


def _normalised(state_dict: dict) -> tuple[dict, list[str]]:
  """Legacy names renamed, ignorable tensors set aside, tied copies checked
  against their sources and dropped."""
  tensors, ignored = {}, []
  bare = not any(name.startswith('bert.') for name in state_dict)
  for name, value in state_dict.items():
    if IGNORED.search(name):
      ignored.append(name)
      continue
    if bare and name.startswith(BARE_MODULES):
      name = 'bert.' + name
    for old, new in LEGACY_SUFFIXES.items():
      if name.endswith(old):
        name = name[:-len(old)] + new
    tensors[name] = value
  for copy, source in TIED.items():
    if copy in tensors:
      value = tensors.pop(copy)
      if not np.array_equal(np.asarray(tensors.setdefault(source, value)),
                            np.asarray(value)):
        raise FormatError(f'{copy} differs from {source}: an untied decoder, '
                          'which our BERT (tied, like HF\'s) cannot hold.')
  return tensors, ignored


def from_hf_state_dict(state_dict: dict, cfg: models.BertConfig,
                       seed: int = 0) -> Imported:
  """Our params from HF BERT tensors (NumPy arrays of any float dtype).

  Accepts BertForMaskedLM, BertForPreTraining (next-sentence head ignored)
  and bare BertModel tensors (no `bert.` prefix), with legacy gamma/beta
  names. Tied decoder copies, the pooler and the MLM head may be present or
  not; a missing pooler or MLM head is initialised as a new model's would be
  (from `seed`) and listed in `fresh`. Anything else missing, unused or
  mis-shaped raises FormatError. The params come in `cfg`'s layout
  (`scan_layers.stack_layers` when `cfg.scan_layers`)."""
  tensors, ignored = _normalised(state_dict)
  hf_config = to_hf_config(cfg)
  expected = {**hf_bert_shapes(hf_config), **pooler_shapes(hf_config)}
  optional = [name for name in expected
              if name in POOLER or name.startswith(MLM_HEAD)]
  check_tensors(tensors, expected, optional=optional)

  # Converted in HF's per-layer layout, then stacked as `cfg` runs it.
  model = models.BertForMaskedLM(dataclasses.replace(cfg, scan_layers=False))
  init = lambda rng: models.init_params(model, rng)
  template = flax.traverse_util.flatten_dict(
      jax.eval_shape(init, jax.random.PRNGKey(seed)))
  fresh = [path for path in template if hf_name(path)[0] not in tensors]
  # Jitted so that XLA drops the initialisers of every param not asked for.
  new = jax.jit(lambda rng: {p: flax.traverse_util.flatten_dict(init(rng))[p]
                             for p in fresh})(jax.random.PRNGKey(seed)) if fresh else {}
  flat = {path: np.asarray(value) for path, value in new.items()}
  for path, like in template.items():
    if path in flat:
      continue
    name, transposed = hf_name(path)
    value = np.asarray(tensors.pop(name), np.float32)
    flat[path] = np.ascontiguousarray(value.T if transposed else value)
    if flat[path].shape != like.shape:
      raise FormatError(f'{name} maps to {"/".join(path)} of shape {like.shape} '
                        f'but has {flat[path].shape} after conversion.')
  if tensors:  # Only if our tree and HF's table disagree.
    raise FormatError(f'Tensors with no place in our BERT: {_listing(tensors)}')
  params = scan_layers.stack_layers(flax.traverse_util.unflatten_dict(flat), cfg)
  return Imported(params,
                  tuple(sorted(hf_name(p)[0] for p in fresh)), tuple(sorted(ignored)))
