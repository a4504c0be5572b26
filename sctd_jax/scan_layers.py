"""The layout of the encoder's parameters under `model.scan_layers`.

Unscanned, `bert/encoder/layer` holds one subtree per layer, `0`, `1`, ...,
as HF's `encoder.layer.N`. Scanned (MaxText's `scan_layers`), each
homogeneous run of layers is one `nn.scan` over parameters stacked along a
leading `layers` axis, and `layer` holds one subtree per run. The per-layer
layout is the canonical one outside the model (HF export and import);
`stack_layers` and `unstack_layers` are the one pair of conversions
(docs/performance.md, "Scanned layers").
"""

from typing import NamedTuple

import jax
import numpy as np


class Run(NamedTuple):
  """Layers `start` to `stop - 1` of LayerStack, one submodule `name`."""
  name: str
  start: int
  stop: int
  stacked: bool  # Params with a leading [stop - start] 'layers' axis, run by nn.scan.


def layer_runs(cfg) -> list[Run]:
  """LayerStack's submodules. Unscanned: one per layer, named by its index
  as in HF. With `scan_layers`, each homogeneous run of layers is one
  submodule scanned over stacked params, named by its first and last layer:
  the full prefix `0-{first-1}`, the kept-only middle and the full suffix
  (docs/performance.md). The cross layer, and any run of one layer, stays a
  plain layer named by its index: a scan of length 1 only adds a loop."""
  num, first, last = cfg.num_layers, cfg.first_drop_layer, cfg.last_drop_layer
  bounds = (sorted({b for b in (0, first, first + 1, last + 1, num) if 0 <= b <= num})
            if cfg.scan_layers else range(num + 1))
  return [Run(str(a), a, b, False) if b == a + 1 else Run(f'{a}-{b - 1}', a, b, True)
          for a, b in zip(bounds, bounds[1:])]


def _layer_tree(params):
  """The `layer` subtree of a BertForMaskedLM (or BertModel) params tree."""
  return (params['bert'] if 'bert' in params else params)['encoder']['layer']


def _with_layer_tree(params, layer):
  if 'bert' in params:
    return {**params, 'bert': _with_layer_tree(params['bert'], layer)}
  return {**params, 'encoder': {**params['encoder'], 'layer': layer}}


def stack_layers(params, cfg):
  """Params in HF's per-layer layout (`layer/0`, `layer/1`, ...) -> the
  layout of `cfg` (stacked runs when `cfg.scan_layers`); host-side, for
  import. `unstack_layers` is the inverse."""
  per_layer = _layer_tree(params)
  layer = {}
  for run in layer_runs(cfg):
    trees = [per_layer[str(i)] for i in range(run.start, run.stop)]
    layer[run.name] = (jax.tree.map(lambda *xs: np.stack(xs), *trees)
                       if run.stacked else trees[0])
  return _with_layer_tree(params, layer)


def unstack_layers(params):
  """Params in any layout -> HF's per-layer layout (for export); the inverse
  of `stack_layers`. A stacked run's name gives its layers (`6-10`), so no
  config is needed."""
  layer = {}
  for name, tree in _layer_tree(params).items():
    if '-' not in name:
      layer[name] = tree
      continue
    start, last = map(int, name.split('-'))
    for i in range(start, last + 1):
      layer[str(i)] = jax.tree.map(lambda x, j=i - start: x[j], tree)
  return _with_layer_tree(params, layer)
