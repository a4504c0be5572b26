"""FLOPs cost model of docs/design.md section 2: what "fast" is measured against.

Forward FLOPs of one layer per query token with `s_kv` keys are
`8 d^2 + 4 d I + 4 s_kv d`: Q, K, V, O projections (2 d^2 each), the FFN
(4 d I) and attention scores plus weighted sum (4 s_kv d). K and V are
projected once per key token, so a layer whose queries are a subset costs
`n_q (4 d^2 + 4 d I + 4 s_kv d) + s_kv 4 d^2`. The MLM head costs
`2 d^2 + 2 d V` per prediction; training is about 3x the forward.

Model FLOPs over wall time against a chip's peak is the MFU (PaLM, appendix
B); the peaks are a table for accelerators and a measured matmul on CPU.
"""

import jax
import jax.numpy as jnp

from sctd_jax import config as config_lib
from sctd_jax import matmuls
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


def step_flops(config) -> dict[str, float]:
  """Training FLOPs (about 3x the forward) of one optimizer step of each
  kind: 'full' (baseline), 'drop', and 'sctd' (both forwards; the prefix
  once with `sctd.share_prefix`)."""
  full, drop = forward_flops(config, False), forward_flops(config, True)
  both = drop + full - (prefix_flops(config) if config.sctd.share_prefix else 0.0)
  return {kind: 3 * config.train.batch_size * f
          for kind, f in dict(full=full, drop=drop, sctd=both).items()}


def step_ratios(config) -> dict[str, float]:
  """Training cost per step relative to the baseline, per method.

  SCTD averages a cycle of Fi steps: Fi-1 dropped steps and one step running
  both forwards, ((Fi-1) drop + drop + full) / Fi; with `sctd.share_prefix`
  that step runs the layers before the cross layer once, not twice."""
  f, fi = step_flops(config), config.sctd.fi
  return {'baseline': 1.0, 'token_drop': f['drop'] / f['full'],
          'sctd': ((fi - 1) * f['drop'] + f['sctd']) / fi / f['full']}


def train_flops_per_step(config, method: str) -> float:
  """Mean training FLOPs per step of `method` (over an SCTD cycle)."""
  return step_flops(config)['full'] * step_ratios(config)[method]


def interval_flops(config, num_steps: int, sctd_steps: int) -> float:
  """Training FLOPs of `num_steps` steps of config.method, `sctd_steps` of
  them semantic-consistent (a metrics.jsonl row's interval)."""
  f = step_flops(config)
  if config.method == 'baseline':
    return num_steps * f['full']
  return sctd_steps * f['sctd'] + (num_steps - sctd_steps) * f['drop']


# Dense bfloat16 peak FLOP/s per chip, from the vendors' data sheets; MFU
# is quoted against these, as PaLM and MaxText do. (chip, substrings of
# jax's device_kind in lower case, peak), matched in order: TPU v5e reports
# 'TPU v5 lite', so it precedes v5p's 'TPU v5'.
PEAK_FLOPS = (
    ('A100', ('a100',), 312e12), ('H100', ('h100',), 989e12),
    ('H200', ('h200',), 989e12), ('TPU v4', ('v4',), 275e12),
    ('TPU v5e', ('v5 lite', 'v5e'), 197e12), ('TPU v5p', ('v5p', 'v5'), 459e12),
)


def chip_peak(device_kind: str) -> tuple[str, float] | None:
  """(chip, peak FLOP/s) of a device kind in the table, else None."""
  kind = device_kind.lower()
  for chip, names, flops in PEAK_FLOPS:
    if any(name in kind for name in names):
      return chip, flops
  return None


def measured_matmul_flops(n: int = 1024, reps: int = 10) -> float:
  """FLOP/s of the best of `reps` float32 n x n matmuls on the default
  device: the CPU's peak, which has no data sheet figure here."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x).lower(a).compile()
  return 2 * n**3 / matmuls.best_seconds(lambda: jax.block_until_ready(matmul(a)), reps)


def peak_flops() -> tuple[float, str]:
  """(peak FLOP/s of all devices of the job, where the figure comes from).

  A CPU process's devices share its cores, so its peak is measured once per
  process (this one's, assumed alike on every host)."""
  device = jax.devices()[0]
  known = chip_peak(device.device_kind)
  if known:
    return known[1] * jax.device_count(), f'{known[0]} data sheet, bf16'
  return (measured_matmul_flops() * jax.process_count(),
          f'measured f32 matmul on {device.device_kind}')


def utilization(flops: float, seconds: float, peak: float) -> dict[str, float]:
  """Model FLOP/s (cost model, not XLA's count) and MFU against `peak`."""
  rate = flops / seconds
  return dict(model_flops_per_s=rate, mfu=rate / peak)
