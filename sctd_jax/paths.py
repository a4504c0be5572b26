"""One path layer for workdirs on a local disk or in a bucket (`gs://...`).

Every file of a workdir goes through `etils.epath` (which reaches GCS through
gcsfs, or tf.io.gfile when TensorFlow is installed); Orbax writes the
checkpoints through the same paths and TensorStore. Tools that only read and
write local folders (HF tokenizers) get a local copy.
"""

import contextlib
import os
import shutil
import tempfile

from etils import epath


def is_remote(path) -> bool:
  return '://' in str(path)


def resolve(path) -> epath.Path:
  """An absolute local path, or the bucket path as given."""
  return epath.Path(path if is_remote(path) else os.path.abspath(path))


def append_text(path, text: str) -> None:
  """Appends to a local file; rewrites a bucket object (GCS objects cannot
  be appended to)."""
  path = epath.Path(path)
  if not is_remote(path):
    with path.open('a') as f:
      f.write(text)
    return
  path.write_text((path.read_text() if path.exists() else '') + text)


def copy_folder(source, destination) -> None:
  """Copies the files of folder `source` (not its subfolders) to `destination`."""
  destination = epath.Path(destination)
  destination.mkdir(parents=True, exist_ok=True)
  for item in epath.Path(source).iterdir():
    if item.is_file():
      (destination / item.name).write_bytes(item.read_bytes())


@contextlib.contextmanager
def local_copy(folder):
  """A local folder holding `folder`'s files: `folder` itself when local,
  else a temporary copy (missing when `folder` does not exist)."""
  if not is_remote(folder):
    yield str(folder)
    return
  tmp = tempfile.mkdtemp(prefix='sctd_jax_')
  local = os.path.join(tmp, epath.Path(folder).name)
  try:
    if epath.Path(folder).exists():
      copy_folder(folder, local)
    yield local
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
