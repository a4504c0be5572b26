"""The one command-line convention every `python -m sctd_jax...` command follows.

Flags are absl flags (`ml_collections.config_flags` where a command takes a
config). A command module defines them in `define_flags()`, so that importing
several commands in one process (as tests do) defines nothing, and ends with

  if __name__ == '__main__':
    define_flags()
    cli.run(main, required=[...])
 A mistake the user can fix raises `UserError` (or a subclass) with
a message that says what is wrong and what to do; `run` prints it as one
`error: ...` line and exits 1, so no user mistake prints a traceback.
Anything else is a bug and keeps its traceback.
"""

import json
import logging as pylogging
import os
import re
import sys
import tempfile
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from sctd_jax import paths


class UserError(Exception):
  """A mistake the user can fix; the message names it and the fix."""


def use_compilation_cache() -> None:
  """Keeps compiled programs on disk (`$SCTD_JAX_COMPILATION_CACHE`, default
  ~/.cache/sctd_jax/xla), so a restart or another seed does not recompile."""
  import jax  # Not at the top: configs import this module's errors.
  jax.config.update('jax_compilation_cache_dir', os.environ.get(
      'SCTD_JAX_COMPILATION_CACHE',
      os.path.join(os.path.expanduser('~'), '.cache', 'sctd_jax', 'xla')))


class _LibraryInfoFilter(pylogging.Filter):
  """Keeps Orbax's and JAX's per-file INFO chatter out of our log."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or not any(
        f'{os.sep}{lib}{os.sep}' in record.pathname for lib in ('orbax', 'jax'))


# What a folder's config.json says it holds (folder_kind); a tokenizer
# folder has none.
PRETRAINING, FINETUNING, HF_MODEL, TOKENIZER = (
    'pretraining run', 'fine-tuning run', 'Hugging Face model', 'tokenizer')
_WRITTEN_BY = {PRETRAINING: 'python -m sctd_jax.train',
               FINETUNING: 'python -m sctd_jax.evals.finetune',
               HF_MODEL: 'python -m sctd_jax.export or transformers'}


def config_kind(values) -> str | None:
  """PRETRAINING, FINETUNING or HF_MODEL by the keys of the config.json each
  writes; None for anything else."""
  if not isinstance(values, dict):
    return None
  if 'model_type' in values:
    return HF_MODEL
  if 'task' in values and 'init' in values:
    return FINETUNING
  if 'method' in values and 'train' in values:
    return PRETRAINING
  return None


def folder_kind(path) -> str | None:
  """config_kind of folder `path` (local or gs://); None without a readable
  config.json."""
  try:
    return config_kind(json.loads((paths.resolve(path) / 'config.json').read_text()))
  except (OSError, ValueError):
    return None


def refuse_other_kind(path: str, flag: str, kind: str) -> None:
  """A UserError naming `flag` if folder `path` holds another kind than
  `kind`, whose files a command writing `kind` would overwrite."""
  held = folder_kind(path)
  if held not in (None, kind):
    raise UserError(f'{flag}={path} holds a {held} (written by {_WRITTEN_BY[held]}), '
                    f'which this {kind} would overwrite; give a new folder.')


def output_dir(path: str, flag: str, kind: str | None = None) -> str:
  """Makes `path`, a command's output folder (local or gs://), if needed and
  checks that it can be written: a file there, a local folder it cannot
  write, or (given the `kind` the command writes) a folder holding another
  kind, whose files it would overwrite, is a UserError naming `flag`,
  before any work is done."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'{flag}={path} is a file, not a folder; give a new or '
                    'existing folder.')
  if kind:
    refuse_other_kind(path, flag, kind)
  if paths.is_remote(path):  # A bucket: no folder to make, nothing to test-write.
    return path
  try:
    os.makedirs(path, exist_ok=True)
    tempfile.TemporaryFile(dir=path).close()
  except OSError as e:
    raise UserError(f'{flag}={path} cannot be written ({e.strerror}); give a '
                    'folder you can write to.') from None
  return path


def _unknown_key(error: Exception, argv: Sequence[str]) -> str | None:
  """'train.num_stepz; did you mean train.num_steps?' from ConfigDict's
  KeyError (bare, or inside an AttributeError) on a misspelled override, its
  dotted path taken from the argument that names the key."""
  while isinstance(error, AttributeError) and error.args and isinstance(
      error.args[0], KeyError):
    error = error.args[0]
  if not isinstance(error, KeyError) or not error.args:
    return None
  key = re.match(r"'([^']+)'", str(error.args[0]))
  guess = re.search(r'Did you mean "([^"]+)"', str(error.args[0]))
  for arg in argv:
    parts = arg.lstrip('-').split('=', 1)[0].split('.')
    if key and key.group(1) in parts[1:]:
      path = parts[1:parts.index(key.group(1), 1)]
      return '.'.join(path + [key.group(1)]) + (
          f'; did you mean {".".join(path + [guess.group(1)])}?' if guess else '.')
  return None


def _config_file(argv: Sequence[str]) -> str | None:
  """The --config file named in `argv`, if any."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _bad_config_file(path: str, why: str) -> str:
  hint = " (a run's config.json is not one)" if path.endswith('.json') else ''
  return (f'error: --config={path} {why}; give a Python file whose get_config() '
          f'returns the config, e.g. configs/tiny.py{hint}.')


def _one_line_flag_errors(argv: Sequence[str]) -> list[str]:
  """absl's own parsing, with a bad flag, config file or config override (a
  misspelled key, a value of the wrong type) reported as one line."""
  help_hint = '(run with --help to see the flags)'
  config_file = _config_file(argv)
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    # config_flags wraps the key error in several lines; the first says it.
    message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    sys.exit(f'error: {message} {help_hint}')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if config_file and "no attribute 'get_config'" in str(e):
      sys.exit(_bad_config_file(config_file, 'has no get_config()'))
    unknown = _unknown_key(e, argv)
    if unknown:
      sys.exit(f'error: unknown config key {unknown} The --config file\'s '
               'get_config() has every key.')
    # ConfigDict says which key is unknown and suggests the nearest one.
    detail = str(e.args[0] if e.args else e).replace('\\n', ' ').replace("\\'", '')
    sys.exit(f'error: bad flag or config override: {" ".join(detail.split())} '
             f'{help_hint}')
  except Exception as e:  # pylint: disable=broad-except
    # Running the config file raised (a syntax error, a JSON file's `false`).
    if not config_file:
      raise
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    sys.exit(_bad_config_file(config_file, f'could not be loaded ({type(e).__name__}: '
                                           f'{first})'))
  for name in flags.FLAGS:
    # config_flags keeps a config file's load error until the config is read.
    error = getattr(flags.FLAGS[name].value, '_error', None)
    if isinstance(error, OSError):
      sys.exit(f'error: --{name}={flags.FLAGS[name].config_filename}: '
               f'{str(error).strip().splitlines()[-1].strip()}; give a config '
               'file with get_config(), e.g. configs/tiny.py.')
  return argv


def run(main: Callable[[list[str]], None], required: Sequence[str] = (),
        positional: bool = False) -> None:
  """absl's `app.run(main)`, with `required` flags, library INFO logs
  quieted, and `UserError` turned into one line and exit status 1. Unless
  `positional`, arguments other than flags are refused."""
  for name in required:
    flags.mark_flag_as_required(name)

  def wrapped(argv):
    logging.get_absl_handler().addFilter(_LibraryInfoFilter())
    if len(argv) > 1 and not positional:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    try:
      main(argv)
    except UserError as e:
      sys.exit(f'error: {e}')

  app.run(wrapped, flags_parser=_one_line_flag_errors)
