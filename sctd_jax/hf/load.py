"""Trained weights in: `load_pretrained` (DESIGN.md section 3) and the
`init_from` start of continued pretraining.

A path is either a training workdir (`config.json` of the run,
`tokenizer/`, Orbax `checkpoints/`) or a Hugging Face BERT folder
(`config.json`, `model.safetensors` or, with torch, `pytorch_model.bin`,
tokenizer files), told apart by the keys of its config.json.
"""

import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.numpy
import transformers

from sctd_jax import checkpointing
from sctd_jax import config as config_lib
from sctd_jax.hf import format as hf_format
from sctd_jax.hf.format import FormatError
from sctd_jax import models
from sctd_jax import step as step_lib

# config.model keys that change what the weights compute; dropout and the
# initializer range may differ between the source and a continued run.
ARCHITECTURE_KEYS = (*checkpointing.SHAPE_KEYS, 'hidden_act', 'layer_norm_eps')


class Pretrained(NamedTuple):
  model: models.BertForMaskedLM
  params: Any
  tokenizer: Any
  step: int | None   # The checkpoint's step; None for an HF folder.


def _read_json(path: str, what: str) -> dict:
  if not os.path.isfile(path):
    raise FormatError(f'{path} not found ({what}).')
  with open(path) as f:
    return json.load(f)


def load_pretrained(path: str):
  """(model, params, tokenizer) of a training workdir (its newest checkpoint)
  or an HF BERT folder. `model.apply({'params': params}, input_ids,
  token_type_ids, attention_mask)` gives MLM logits [B, S, V]."""
  config = _read_json(os.path.join(path, 'config.json'),
                      'a training workdir or a Hugging Face BERT folder has one; '
                      'give the --workdir of a python -m sctd_jax.train run or '
                      'the --out of python -m sctd_jax.export')
  load = load_workdir if 'model' in config and 'train' in config else load_hf_folder
  return load(path)[:3]


def load_workdir(workdir: str, step: int | None = None) -> Pretrained:
  """The params of checkpoint `step` (default: the newest) of a training run."""
  config = ml_collections.ConfigDict(_read_json(
      os.path.join(workdir, 'config.json'), 'so it is not a training workdir; '
      'python -m sctd_jax.train writes one into its --workdir'))
  directory = os.path.join(workdir, 'checkpoints')
  train_first = ('; the run saves one every train.checkpoint_every steps and '
                 'at its end: run (or resume) python -m sctd_jax.train with '
                 f'--workdir {workdir} first.')
  if not os.path.isdir(directory):  # Checkpointer would create it.
    raise FormatError(f'No checkpoint in {workdir}{train_first}')
  checkpointer = checkpointing.Checkpointer(workdir, config.train.keep_checkpoints)
  try:
    steps = checkpointer.steps()
    if not steps:
      raise FormatError(f'No checkpoint in {directory}{train_first}')
    if step is not None and step not in steps:
      raise FormatError(f'No checkpoint for step {step} in {directory}; '
                        f'available steps: {", ".join(map(str, steps))}.')
    vocab_size = config.model.vocab_size
    model = models.BertForMaskedLM(step_lib.model_config(config, vocab_size))
    abstract = jax.eval_shape(lambda: step_lib.create_train_state(
        config, model, jnp.zeros(vocab_size), jax.random.PRNGKey(0)))
    restored = checkpointer.restore(abstract, checkpointing.model_shape(config), step)
  finally:
    checkpointer.close()
  if restored is None:
    raise FormatError(f'No readable checkpoint in {directory}.')
  state, _ = restored
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      os.path.join(workdir, 'tokenizer'))
  return Pretrained(model, state.params, tokenizer, int(state.step))


def read_hf_tensors(folder: str) -> dict[str, np.ndarray]:
  """The tensors of an HF folder's model.safetensors, or of its
  pytorch_model.bin when torch is installed."""
  path = os.path.join(folder, 'model.safetensors')
  if os.path.isfile(path):
    return safetensors.numpy.load_file(path)
  path = os.path.join(folder, 'pytorch_model.bin')
  if not os.path.isfile(path):
    raise FormatError(f'{folder} has neither model.safetensors nor pytorch_model.bin.')
  try:
    import torch
  except ImportError:
    raise FormatError(f'{path} needs torch to read; install it, or convert the '
                      'folder to model.safetensors.') from None
  state_dict = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.float().numpy() for k, v in state_dict.items()}


def _import(folder: str, cfg: models.BertConfig) -> hf_format.Imported:
  imported = hf_format.from_hf_state_dict(read_hf_tensors(folder), cfg)
  loaded = len(jax.tree.leaves(imported.params)) - len(imported.fresh)
  logging.info('Loaded %d tensors from %s.', loaded, folder)
  if imported.fresh:
    logging.warning('Not in %s, initialised afresh: %s.', folder,
                    ', '.join(imported.fresh))
  if imported.ignored:
    logging.warning('In %s but unused by BertForMaskedLM: %s.', folder,
                    ', '.join(imported.ignored))
  return imported


def load_hf_folder(folder: str) -> Pretrained:
  cfg = hf_format.from_hf_config(_read_json(os.path.join(folder, 'config.json'),
                                            'an HF model folder has one'))
  params = jax.tree.map(jnp.asarray, _import(folder, cfg).params)
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  return Pretrained(models.BertForMaskedLM(cfg), params, tokenizer, None)


def warm_start(config, model: models.BertForMaskedLM, tokenizer, state):
  """`state` with the params of the HF folder `config.init_from`, placed like
  the fresh ones. Refuses (ConfigError naming the keys) a folder whose model
  differs from `config.model` or whose vocabulary differs from `tokenizer`."""
  folder = config.init_from
  try:
    source = hf_format.model_config_values(_read_json(
        os.path.join(folder, 'config.json'), 'an HF model folder has one'))
    diffs = [f'model.{k}: init_from has {source[k]!r}, config {config.model[k]!r}'
             for k in ARCHITECTURE_KEYS if source[k] != config.model[k]]
    if diffs:
      raise FormatError(f'its model differs from the config ({"; ".join(diffs)}); '
                        'set those model.* keys to its values.')
    if transformers.AutoTokenizer.from_pretrained(folder).get_vocab() != tokenizer.get_vocab():
      raise FormatError('its tokenizer differs from the one in the workdir; the '
                        'weights only make sense with their own vocabulary, so '
                        'start from a --workdir without tokenizer/.')
    params = _import(folder, model.cfg).params
  except FormatError as e:
    raise config_lib.ConfigError(f'config key init_from={folder!r}: {e}') from None
  # Built shard by shard, so a multi-host mesh gets each host's part.
  place = lambda new, old: jax.make_array_from_callback(
      old.shape, old.sharding, lambda index: new[index])
  return state.replace(params=jax.tree.map(place, params, state.params))
