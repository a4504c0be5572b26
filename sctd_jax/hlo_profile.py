"""Where a compiled step spends its time: HLO ops from a jax.profiler trace.

    python -m sctd_jax.bench --profile DIR [--config ...]

traces a few steps of each method with `jax.profiler.trace` (open DIR in
TensorBoard's profile plugin or XProf for the timeline) and prints the ops
that took the most time, summed over the traced steps, as XProf's "HLO op
stats" page does. XLA:CPU names most thunks after the library that runs them
(`ynn_fusion.12` is a dot or reduction handed to YNNPACK), so each op is
named by the JAX operation it came from, read from the compiled HLO's
`op_name` metadata: `bwd bert/encoder/layer/N/intermediate/dense/dot_general`
is the backward pass of the FFN's first matmul, summed over the layers.
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
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.-]+) = .*?op_name="([^"]*)"', re.M)


def trace_steps(run_step, num_steps: int, directory: str) -> str:
  """Runs `run_step()` `num_steps` times under the profiler; returns the
  .xplane.pb file written in `directory`."""
  with jax.profiler.trace(directory):
    for _ in range(num_steps):
      jax.block_until_ready(run_step())
  files = glob.glob(os.path.join(directory, '**', '*.xplane.pb'), recursive=True)
  return max(files, key=os.path.getmtime)


def short_op_name(op_name: str) -> str:
  """A JAX name stack, shortened to group alike ops: 'fwd'/'bwd' for the
  forward and its transpose, layer numbers as N, and nothing below the
  first jitted helper (`Dropout_0/jit(_bernoulli)`)."""
  name = re.sub(r'^jit\([^)]*\)/', '', op_name)
  name = re.sub(r'^(while/body/|closed_call/|cond/branch_\d+_fun/)+', '', name)
  name = re.sub(r'transpose\(jvp\(([^()]*)\)\)', r'bwd \1', name)
  name = re.sub(r'jvp\(([^()]*)\)', r'fwd \1', name)
  name = re.sub(r'(fwd|bwd) [\w.]+/', r'\1 ', name)   # The module's class name.
  name = re.sub(r'/(\d+)/', '/N/', name)
  return re.sub(r'(/jit\([^)]*\)).*$', r'\1', name)


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> `short_op_name` of its op_name metadata, from
  a compiled module's text (`compiled.as_text()`)."""
  return {m.group(1): short_op_name(m.group(2))
          for m in _INSTRUCTION.finditer(hlo_text)}


def op_times(xplane_file: str, names: dict[str, str] | None = None
             ) -> collections.Counter:
  """Seconds per op over all host threads: per JAX operation where `names`
  (from `op_names`) knows the instruction, else per HLO op kind (suffix
  stripped).

  Ops on the two cores overlap in time, so the sum can exceed wall time."""
  names = names or {}
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
        key = names.get(name) or _SUFFIX.sub('', _SUFFIX.sub('', name))
        totals[key] += event.duration_ns / 1e9
  return totals


def format_top(totals: collections.Counter, wall_s: float, top: int = 12) -> str:
  busy = sum(totals.values())
  width = max([len(n) for n, _ in totals.most_common(top)] + [20]) + 2
  lines = [f'{"op":<{width}}{"s":>8}{"share":>8}  (ops busy {busy:.2f} s, wall {wall_s:.2f} s)']
  for name, seconds in totals.most_common(top):
    lines.append(f'{name:<{width}}{seconds:>8.3f}{seconds / busy:>8.1%}')
  return '\n'.join(lines)
