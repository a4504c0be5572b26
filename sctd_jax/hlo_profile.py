"""Where a compiled step spends its time: HLO ops from a jax.profiler trace.

    python -m sctd_jax.bench --profile DIR [--config ...]

traces a few steps of each method with `jax.profiler.trace` (open DIR in
TensorBoard's profile plugin or XProf for the timeline) and prints the ops
that took the most time, summed over the traced steps, as XProf's "HLO op
stats" page does.
"""

import collections
import glob
import os
import re

import jax

# Thunk and op names XLA:CPU records; a fusion's name says what it fused
# ('loop_add_fusion', 'dot.12', ...). Numeric suffixes group alike ops.
_SUFFIX = re.compile(r'[._]\d+$')
_INFRA = ('ExecuteHelper', 'PjitFunction', 'ThunkExecutor', 'Execute',
          'TfrtCpuExecutable', 'XlaModule')


def trace_steps(run_step, num_steps: int, directory: str) -> str:
  """Runs `run_step()` `num_steps` times under the profiler; returns the
  .xplane.pb file written in `directory`."""
  with jax.profiler.trace(directory):
    for _ in range(num_steps):
      jax.block_until_ready(run_step())
  files = glob.glob(os.path.join(directory, '**', '*.xplane.pb'), recursive=True)
  return max(files, key=os.path.getmtime)


def op_times(xplane_file: str) -> collections.Counter:
  """Seconds per HLO op kind (suffix stripped) over all host threads.

  Ops on the two cores overlap in time, so the sum can exceed wall time."""
  data = jax.profiler.ProfileData.from_file(xplane_file)
  totals = collections.Counter()
  for plane in data.planes:
    if not plane.name.startswith('/host:'):
      continue
    for line in plane.lines:
      for event in line.events:
        name = event.name
        if any(name.startswith(p) for p in _INFRA) or ' ' in name:
          continue
        totals[_SUFFIX.sub('', _SUFFIX.sub('', name))] += event.duration_ns / 1e9
  return totals


def format_top(totals: collections.Counter, wall_s: float, top: int = 12) -> str:
  busy = sum(totals.values())
  lines = [f'{"op":<44}{"s":>8}{"share":>8}  (ops busy {busy:.2f} s, wall {wall_s:.2f} s)']
  for name, seconds in totals.most_common(top):
    lines.append(f'{name[:43]:<44}{seconds:>8.3f}{seconds / busy:>8.1%}')
  return '\n'.join(lines)
