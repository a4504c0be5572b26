"""Several corpora mixed by weight (`data.sources`), as the paper's
Wikipedia + BookCorpus.

`data.sources='SPEC=WEIGHT;SPEC=WEIGHT...'` (each SPEC as `data.source`)
mixes the corpora in proportion to their weights. The samples are dealt in
chunks of `CHUNK`: each chunk holds a fixed number of blocks of each corpus
(the weights' shares, rounded by largest remainder) in an order shuffled by
(seed, split, chunk), and each corpus's blocks are taken in its own order. So
global sample p is a pure function of p: the mixture needs no state of its
own, its position is the run's position (saved with every checkpoint), a
resume continues exactly, and the batches do not depend on the process count.
"""

import numpy as np

from sctd_jax.data import readers

# Samples per chunk: the weights hold exactly within each chunk.
CHUNK = 1000


def parse_mixture(spec: str) -> tuple[list[str], list[float]]:
  """'SPEC=WEIGHT;...' -> (corpus specs, weights); an error names the key."""
  specs, weights = [], []
  for item in filter(None, (part.strip() for part in spec.split(';'))):
    corpus, sep, weight = item.rpartition('=')
    try:
      value = float(weight)
    except ValueError:
      value = -1.0
    if not sep or value <= 0:
      raise readers.DataError(
          f'config key data.sources={spec!r}: {item!r} is not SPEC=WEIGHT with a '
          "weight > 0, e.g. 'files:wiki/*.jsonl=3;files:books/*.txt=1'.")
    readers.parse_source(corpus, 'data.sources')
    specs.append(corpus)
    weights.append(value)
  if not specs:
    raise readers.DataError(f"config key data.sources={spec!r} names no corpus.")
  return specs, weights


def shares(weights: list[float], total: int) -> np.ndarray:
  """Integers summing to `total` in the proportions of `weights` (largest
  remainder; ties to the earlier corpus)."""
  exact = np.asarray(weights, np.float64) / sum(weights) * total
  counts = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - counts), kind='stable')
  counts[order[:total - counts.sum()]] += 1
  return counts


class MixedSource:
  """Blocks of `parts` (sources with `block(i)`) mixed by `weights`."""

  def __init__(self, parts: list, weights: list[float], seed: int, split_id: int):
    self.parts, self.tokenizer = parts, parts[0].tokenizer
    self.split = parts[0].split
    self.counts = shares(weights, CHUNK)
    self._owner = np.repeat(np.arange(len(parts)), self.counts)
    self._rank = np.concatenate([np.arange(n) for n in self.counts])
    self._seed = [seed, split_id, len(parts)]
    self._chunk, self._order = -1, None

  def locate(self, index: int) -> tuple[int, int]:
    """(corpus, its block) of global sample `index`."""
    chunk, i = divmod(index, CHUNK)
    if chunk != self._chunk:
      self._order = np.random.default_rng([*self._seed, chunk]).permutation(CHUNK)
      self._chunk = chunk
    slot = self._order[i]
    part = int(self._owner[slot])
    return part, chunk * int(self.counts[part]) + int(self._rank[slot])

  def block(self, index: int) -> np.ndarray:
    return self.blocks([index])[0]

  def blocks(self, indices) -> np.ndarray:
    """The blocks at `indices`, fetched from each corpus in one call."""
    located = np.array([self.locate(int(i)) for i in indices]).reshape(-1, 2)
    rows = np.empty((len(located), self.parts[0].seq_len), np.int32)
    for part in np.unique(located[:, 0]):
      here = located[:, 0] == part
      rows[here] = self.parts[part].blocks(located[here, 1])
    return rows
