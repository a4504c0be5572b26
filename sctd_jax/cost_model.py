"""FLOPs cost model of DESIGN.md section 2: what "fast" is measured against.

Forward FLOPs of one layer per query token with `s_kv` keys are
`8 d^2 + 4 d I + 4 s_kv d`: Q, K, V, O projections (2 d^2 each), the FFN
(4 d I) and attention scores plus weighted sum (4 s_kv d). K and V are
projected once per key token, so a layer whose queries are a subset costs
`n_q (4 d^2 + 4 d I + 4 s_kv d) + s_kv 4 d^2`. The MLM head costs
`2 d^2 + 2 d V` per prediction; training is about 3x the forward.
"""

from sctd_jax import config as config_lib
from sctd_jax import token_drop


def layer_flops(d: int, inter: int, n_q: int, n_kv: int) -> float:
  return n_q * (4 * d * d + 4 * d * inter + 4 * n_kv * d) + n_kv * 4 * d * d


def forward_flops(config, dropped: bool) -> float:
  """Forward FLOPs per sequence of the full or the token-dropping path."""
  m, S = config.model, config.data.seq_len
  d, inter = m.hidden_size, m.intermediate_size
  vocab = config.model.vocab_size if config.model.vocab_size > 0 else 30522
  k = token_drop.keep_count(S, config.token_drop.keep_rate)
  first, last = config_lib.drop_layers(config)
  total = config.data.max_predictions * (2 * d * d + 2 * d * vocab)
  for i in range(m.num_layers):
    if not dropped or i < first or i > last:
      total += layer_flops(d, inter, S, S)
    elif i == first:
      total += layer_flops(d, inter, k, S)
    else:
      total += layer_flops(d, inter, k, k)
  return total


def prefix_flops(config) -> float:
  """Forward FLOPs per sequence of the full layers before the cross layer."""
  m, S = config.model, config.data.seq_len
  first, _ = config_lib.drop_layers(config)
  return first * layer_flops(m.hidden_size, m.intermediate_size, S, S)


def step_ratios(config) -> dict[str, float]:
  """Training cost per step relative to the baseline, per method.

  SCTD averages a cycle of Fi steps: Fi-1 dropped steps and one step running
  both forwards, ((Fi-1) drop + drop + full) / Fi; with `sctd.share_prefix`
  that step runs the layers before the cross layer once, not twice."""
  full, drop = forward_flops(config, False), forward_flops(config, True)
  fi = config.sctd.fi
  both = drop + full - (prefix_flops(config) if config.sctd.share_prefix else 0.0)
  return {'baseline': 1.0, 'token_drop': drop / full,
          'sctd': ((fi - 1) * drop + both) / fi / full}


def train_flops_per_step(config, method: str) -> float:
  """About 3x the forward (backward costs twice the forward)."""
  full = forward_flops(config, False)
  return 3 * config.train.batch_size * full * step_ratios(config)[method]
