"""Trained weights in: `load_pretrained` (docs/design.md section 3) and the
`init_from` start of continued pretraining.

A path is either a training workdir (`config.json` of the run,
`tokenizer/`, Orbax `checkpoints/`) or a Hugging Face BERT folder
(`config.json`, `model.safetensors` or, with torch, `pytorch_model.bin`,
tokenizer files), told apart by the keys of its config.json. An HF folder
may hold BertForMaskedLM, BertForPreTraining or a bare BertModel (see
`format.from_hf_state_dict`); a name that is not a local path is a Hub id,
downloaded where the Hub is reachable.
"""

import json
import os
from typing import Any, NamedTuple

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import huggingface_hub
import safetensors.numpy
import transformers

from sctd_jax import checkpointing
from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax.hf import format as hf_format
from sctd_jax.hf.format import FormatError
from sctd_jax import models
from sctd_jax import paths
from sctd_jax import scan_layers
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
  path = epath.Path(path)
  if not path.is_file():
    raise FormatError(f'{path} not found ({what}).')
  return json.loads(path.read_text())


# Files of a Hub BERT repository that loading reads.
HUB_FILES = ('config.json', '*.safetensors', 'pytorch_model.bin', 'vocab.txt',
             'tokenizer*', 'special_tokens_map.json')


def resolve(path: str) -> str:
  """A local folder for `path`: itself if it exists, else the snapshot of
  the Hub repository of that id (FormatError if the Hub is unreachable)."""
  if os.path.exists(path) or not config_lib.is_hub_id(path):
    return path
  try:
    return huggingface_hub.snapshot_download(path, allow_patterns=list(HUB_FILES))
  except (huggingface_hub.errors.HfHubHTTPError,
          huggingface_hub.errors.LocalEntryNotFoundError, OSError) as e:
    raise FormatError(
        f'{path!r} is not a local folder, and as a Hugging Face Hub id it could '
        f'not be fetched ({type(e).__name__}: {str(e).splitlines()[0]}). Where the '
        f'Hub is reachable run `huggingface-cli download {path} --local-dir DIR` '
        'and pass DIR instead.') from None


def load_pretrained(path: str):
  """(model, params, tokenizer) of a training workdir (its newest checkpoint),
  an HF BERT folder or a Hub id. `model.apply({'params': params}, input_ids,
  token_type_ids, attention_mask)` gives MLM logits [B, S, V]."""
  path = resolve(path)
  config = _read_json(os.path.join(path, 'config.json'),
                      'a training workdir or a Hugging Face BERT folder has one; '
                      'give the --workdir of a python -m sctd_jax.train run or '
                      'the --out of python -m sctd_jax.export')
  # A fine-tuning run goes to load_workdir too, which says what it is.
  load = (load_workdir if cli.config_kind(config) in (cli.PRETRAINING, cli.FINETUNING)
          else load_hf_folder)
  return load(path)[:3]


def load_workdir(workdir: str, step: int | None = None) -> Pretrained:
  """The params of checkpoint `step` (default: the newest) of a training run."""
  config = _read_json(os.path.join(workdir, 'config.json'), 'so it is not a training '
                      'workdir; python -m sctd_jax.train writes one into its --workdir')
  if (kind := cli.config_kind(config)) != cli.PRETRAINING:
    held = f'holds a {kind}' if kind else "has a config.json that is not a training run's"
    raise FormatError(f'{workdir} {held}, not a training workdir; give the --workdir '
                      'of a python -m sctd_jax.train run.')
  config = config_lib.saved(config)
  directory = os.path.join(workdir, 'checkpoints')
  train_first = ('; the run saves one every train.checkpoint_every steps and '
                 'at its end: run (or resume) python -m sctd_jax.train with '
                 f'--workdir {workdir} first.')
  if not epath.Path(directory).is_dir():  # Checkpointer would create it.
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
    # Onto this process's first device, whatever mesh and process count
    # wrote the checkpoint; a reader never moves a checkpoint aside.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    try:
      restored = checkpointer.restore(abstract, checkpointing.model_shape(config), step,
                                      quarantine=False)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, cli.UserError):
        raise
      # Orbax raises many types for a damaged checkpoint.
      first = str(e).splitlines()[0][:300] if str(e) else ''
      raise FormatError(f'Checkpoint {step} in {directory} cannot be read '
                        f'({type(e).__name__}: {first}).') from None
  finally:
    checkpointer.close()
  if restored is None:
    raise FormatError(f'No readable checkpoint in {directory}.')
  state, _ = restored
  with paths.local_copy(os.path.join(workdir, 'tokenizer')) as folder:
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
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
  per_layer = scan_layers.unstack_layers(imported.params)
  loaded = len(jax.tree.leaves(per_layer)) - len(imported.fresh)
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


def adopt_shape(config) -> None:
  """Gives `config.model` the architecture of the HF folder (or Hub id)
  `config.init_from` when every architecture key is at its default, so
  `init_from=FOLDER` alone continues pretraining any BERT. A config that sets
  one is left alone; `warm_start` then names each override it needs."""
  defaults = config_lib.base_config().model
  if not config.init_from or any(config.model[k] != defaults[k]
                                 for k in ARCHITECTURE_KEYS):
    return
  source = _source_model(config.init_from)
  with config.unlocked():
    config.model.update({k: source[k] for k in ARCHITECTURE_KEYS
                         if k != 'vocab_size'})  # -1 takes the tokenizer's.
  logging.info('Model shape from init_from %s: %s.', config.init_from,
               {k: source[k] for k in ARCHITECTURE_KEYS})


def _source_model(folder: str) -> dict:
  try:
    return hf_format.model_config_values(_read_json(
        os.path.join(resolve(folder), 'config.json'), 'an HF model folder has one'))
  except FormatError as e:
    raise config_lib.ConfigError(f'config key init_from={folder!r}: {e}') from None


def warm_start(config, model: models.BertForMaskedLM, tokenizer, state):
  """`state` with the params of the HF folder `config.init_from`, placed like
  the fresh ones. Refuses (ConfigError naming the keys) a folder whose model
  differs from `config.model` or whose vocabulary differs from `tokenizer`."""
  source = _source_model(config.init_from)
  overrides = [f'--config.model.{k}={source[k]}' for k in ARCHITECTURE_KEYS
               if source[k] != config.model[k]]
  if overrides:
    raise config_lib.ConfigError(
        f'config key init_from={config.init_from!r}: its model differs from the '
        f'config; pass {" ".join(overrides)} (or leave every model shape key at '
        'its default to take the folder\'s).')
  folder = resolve(config.init_from)
  try:
    if transformers.AutoTokenizer.from_pretrained(folder).get_vocab() != tokenizer.get_vocab():
      raise FormatError('its tokenizer differs from the one in the workdir; the '
                        'weights only make sense with their own vocabulary, so '
                        'start from a --workdir without tokenizer/.')
    params = _import(folder, model.cfg).params
  except FormatError as e:
    raise config_lib.ConfigError(f'config key init_from={config.init_from!r}: {e}') from None
  # Built shard by shard, so a multi-host mesh gets each host's part.
  place = lambda new, old: jax.make_array_from_callback(
      old.shape, old.sharding, lambda index: new[index])
  return state.replace(params=jax.tree.map(place, params, state.params))
