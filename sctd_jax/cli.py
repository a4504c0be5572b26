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

import logging as pylogging
import os
import sys
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging


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


def _one_line_flag_errors(argv: Sequence[str]) -> list[str]:
  """absl's own parsing, with a bad flag or config override (a misspelled
  key, a value of the wrong type) reported as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # config_flags wraps the key error in several lines; the first says it.
    message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    sys.exit(f'error: {message}\nRun with --help to see the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ConfigDict says which key is unknown and suggests the nearest one.
    detail = str(e.args[0] if e.args else e).replace('\\n', ' ').replace("\\'", '')
    sys.exit(f'error: bad flag or config override: {" ".join(detail.split())}\n'
             'Run with --help to see the flags; config keys are those of the '
             "--config file's get_config().")


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
