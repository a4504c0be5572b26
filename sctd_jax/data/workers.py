"""Batches built in worker processes (`data.workers`).

Global sample p is a pure function of p (see `pipeline`), so worker k can
build the batches at any positions and the run still sees exactly the
batches of one process: the same for any number of workers, and resumable
at a position as before. Workers are spawned (not forked: JAX's threads do
not survive a fork), open the source themselves from its cache, and run
JAX on the CPU only, so they never claim an accelerator. Streams
(`data.streaming`) are read in order by one reader and take no workers.
"""

import collections
from concurrent import futures
import itertools
import multiprocessing

import jax

# In a worker: the arguments of its `pipeline.Batches`, then the Batches.
_args = None
_local = None


def _remember(args: tuple) -> None:
  global _args
  _args = args


def _batch(start: int) -> dict:
  """In a worker: the batch at global sample `start`; opens the source the
  first time (its errors return to the caller with the result)."""
  global _local
  if _local is None:
    jax.config.update('jax_platforms', 'cpu')
    from sctd_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    config, tokenizer, split, index, count = _args
    _local = pipeline.Batches(config, tokenizer, split, {}, index, count)
  return _local.batch_at(start)


class WorkerBatches:
  """The batches at global samples start, start + size, ... built by
  `workers` processes, in order, `2 * workers` of them in flight. `args`:
  (config, tokenizer, split, process index, process count). A worker that
  dies (killed, out of memory) fails the iterator instead of hanging it."""

  def __init__(self, args: tuple, start: int, size: int, workers: int):
    self._pool = futures.ProcessPoolExecutor(
        workers, multiprocessing.get_context('spawn'), _remember, (args,))
    self._starts = itertools.count(start, size)
    self._pending = collections.deque(self._submit() for _ in range(2 * workers))

  def _submit(self) -> futures.Future:
    return self._pool.submit(_batch, next(self._starts))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    result = self._pending.popleft()
    self._pending.append(self._submit())
    return result.result()

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)
