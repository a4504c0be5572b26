"""Step-time benchmark of baseline, token dropping and SCTD on one shape.

    python -m sctd_jax.bench [--config configs/bench.py] [--json OUT]
        [--vocab_sizes 1024,30522] [--variants sctd,sctd_shared] [--cycles 0]

Each variant's `train_step` (the three methods, and SCTD with
`sctd.share_prefix`) is compiled (compile time printed), warmed up, then
timed over whole SCTD cycles (Fi steps, block_until_ready at the end of each
cycle); cycles of the variants are interleaved so drift of the machine hits
all alike. Printed per variant: median step time, tokens/s, measured ratio
to baseline, the cost model's ratio, model FLOP/s (cost model) and MFU
against the device's peak (a data-sheet table, or a matmul measured in the
same run on CPU). Where torch and transformers are installed, HF's PyTorch
`BertForMaskedLM` on the same shape, batch, masked positions, dropout and
AdamW is a peer row, its cycles interleaved with the JAX ones and its
intra-op threads as many as XLA's. `--cycles 0` compiles only and reports
compile time and memory per device; `--compile` compiles the SCTD step from
abstract shapes with model.scan_layers off and on; `--matmuls` times a
layer's matmul shapes alone in JAX and PyTorch.
"""

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Iterator

from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
from ml_collections import config_flags
import numpy as np

from sctd_jax import checkpointing
from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax import cost_model
from sctd_jax.data import pipeline
from sctd_jax.data import readers
from sctd_jax.data import sources
from sctd_jax.data import tokenizer as tokenizer_lib
from sctd_jax import hlo_profile
from sctd_jax import matmuls
from sctd_jax import models
from sctd_jax import sharding
from sctd_jax import step as step_lib
from sctd_jax import token_drop

# (row name, method, sctd.share_prefix): the three methods, and SCTD with
# its prefix shared (beyond the paper).
VARIANTS = (('baseline', 'baseline', False), ('token_drop', 'token_drop', False),
            ('sctd', 'sctd', False), ('sctd_shared', 'sctd', True))
HF_ROW = 'hf_pytorch_baseline'   # The peer: HF's PyTorch BertForMaskedLM.


def select_variants(names=None) -> tuple:
  """The VARIANTS rows named in `names` (all if None), baseline always
  first: every ratio is to it."""
  known = [name for name, _, _ in VARIANTS]
  unknown = sorted(set(names or ()) - set(known))
  if unknown:
    raise cli.UserError(f'--variants: unknown {unknown}; choose among {known}.')
  return tuple(v for v in VARIANTS if names is None or v[0] in names or v[0] == 'baseline')


def variant_config(config, method: str, share_prefix: bool):
  c = config.copy_and_resolve_references()
  c.method, c.sctd.share_prefix = method, share_prefix
  return c


def random_batch(config, rng: np.random.Generator) -> dict:
  """A masked batch of random ids: step time does not depend on the text."""
  B, S, P = config.train.batch_size, config.data.seq_len, config.data.max_predictions
  V = config.model.vocab_size
  ids = rng.integers(5, V, (B, S), dtype=np.int32)
  ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP]
  positions = np.sort(rng.choice(np.arange(1, S - 1), (B, P)), axis=1).astype(np.int32)
  labels = np.take_along_axis(ids, positions, 1)
  np.put_along_axis(ids, positions, 4, 1)  # [MASK]
  return dict(input_ids=ids, token_type_ids=np.zeros_like(ids),
              attention_mask=np.ones_like(ids), mlm_positions=positions,
              mlm_ids=labels, mlm_weights=np.ones((B, P), np.float32))


def jax_runners(config, variants=VARIANTS) -> tuple[dict, dict, dict]:
  """Per variant of `variants`, a function running one step; each compiled
  step's memory per device (XLA's memory analysis) and compile time."""
  mesh = sharding.make_mesh(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  batch = sharding.global_batch(random_batch(config, np.random.default_rng(0)),
                                batch_sharding, config.train.batch_size)
  runners, memory, compile_s = {}, {}, {}
  for name, method, share_prefix in variants:
    c = variant_config(config, method, share_prefix)
    model = models.BertForMaskedLM(
        step_lib.model_config(c, c.model.vocab_size))
    importance = token_drop.init_importance(c.model.vocab_size, [2, 3, 4], [0])
    state, state_sharding = step_lib.create_sharded_train_state(
        c, model, importance, jax.random.PRNGKey(0), mesh)
    start = time.perf_counter()
    compiled = step_lib.make_train_step(
        model, c, (state_sharding, batch_sharding, replicated)).lower(state, batch).compile()
    compile_s[name] = time.perf_counter() - start
    memory[name] = device_memory(compiled)
    runners[name] = _stepper(compiled, state, batch)
  return runners, memory, compile_s


def _stepper(compiled, state, batch):
  """One call of `compiled` on the state it returned last (donated); returns
  its outputs, which may still be computing."""
  holder = [state]

  def run_step():
    holder[0], metrics = compiled(holder[0], batch)
    return holder[0], metrics
  return run_step


def time_interleaved(runners: dict, cycles: int, steps_per_cycle: int) -> dict:
  """Per-cycle mean step time (s) of each runner: cycle 0 warms up, then the
  runners take turns cycle by cycle, so drift of a shared machine hits all
  alike. A cycle ends when its last step's outputs are ready."""
  times = {name: [] for name in runners}
  for cycle in range(cycles + 1 if cycles else 0):
    for name, run_step in runners.items():
      start = time.perf_counter()
      for _ in range(steps_per_cycle):
        outputs = run_step()
      jax.block_until_ready(outputs)
      if cycle:
        times[name].append((time.perf_counter() - start) / steps_per_cycle)
  return times


def compile_times(config) -> dict:
  """{'unrolled'|'scanned': (trace s, XLA compile s)} of the SCTD train_step
  (its cond holds the token-dropping and the SCTD branch, so every layer
  kind), lowered from abstract shapes (jax.eval_shape: no parameter is
  allocated, so BERT-large compiles where it could not train)."""
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       random_batch(config, np.random.default_rng(0)))
  out = {}
  for scan in (False, True):
    c = variant_config(config, 'sctd', False)
    c.model.scan_layers = scan
    model = models.BertForMaskedLM(step_lib.model_config(c, c.model.vocab_size))
    importance = token_drop.init_importance(c.model.vocab_size, [2, 3, 4], [0])
    state = jax.eval_shape(lambda: step_lib.create_train_state(
        c, model, importance, jax.random.PRNGKey(0)))
    start = time.perf_counter()
    lowered = step_lib.make_train_step(model, c).lower(state, batch)
    traced = time.perf_counter() - start
    lowered.compile()
    compiled = time.perf_counter() - start - traced
    out['scanned' if scan else 'unrolled'] = (traced, compiled)
  return out


def format_compile_times(config, times: dict) -> str:
  m = config.model
  lines = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {machine()}",
           f'SCTD train_step, {m.num_layers} layers, hidden {m.hidden_size}, '
           f'{m.num_heads} heads, seq {config.data.seq_len}, batch '
           f'{config.train.batch_size}: seconds to trace + XLA-compile']
  lines += [f'{layout:<10}{t[0]:>8.1f} + {t[1]:.1f}' for layout, t in times.items()]
  return '\n'.join(lines)


def profile(config, directory: str, variants=VARIANTS[:3]) -> Iterator[str]:
  """Yields, per variant, the top HLO ops of 3 traced steps."""
  for name, method, share_prefix in variants:
    c = variant_config(config, method, share_prefix)
    model = models.BertForMaskedLM(step_lib.model_config(c, c.model.vocab_size))
    importance = token_drop.init_importance(c.model.vocab_size, [2, 3, 4], [0])
    state = [step_lib.create_train_state(c, model, importance, jax.random.PRNGKey(0))]
    batch = random_batch(c, np.random.default_rng(0))
    train_step = step_lib.make_train_step(model, c).lower(state[0], batch).compile()

    def run_step():
      state[0], metrics = train_step(state[0], batch)
      return metrics

    for _ in range(2):  # Warm-up.
      jax.block_until_ready(run_step())
    start = time.perf_counter()
    trace = hlo_profile.trace_steps(run_step, 3, os.path.join(directory, name))
    wall = time.perf_counter() - start
    names = hlo_profile.op_names(train_step.as_text())
    yield f'{name} (3 steps)\n' + hlo_profile.format_top(
        hlo_profile.op_times(trace, names), wall, top=20)


def device_memory(compiled) -> float | None:
  """Peak bytes per device of a compiled step: arguments + outputs +
  temporaries, less what donation aliases (None where XLA does not say)."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes
          + m.temp_size_in_bytes - m.alias_size_in_bytes)


def hf_pytorch_runner(config):
  """A function running one training step of HF's PyTorch BertForMaskedLM
  (AdamW, float32) on the batch the JAX steps get, with as many intra-op
  threads as XLA:CPU uses (this process's cores); None without torch."""
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch = matmuls.torch_with_xla_threads()
  if torch is None:
    return None
  torch.manual_seed(0)
  m = config.model
  hf_config = transformers.BertConfig(
      vocab_size=m.vocab_size, hidden_size=m.hidden_size,
      num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
      intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings,
      hidden_dropout_prob=m.dropout_rate,
      attention_probs_dropout_prob=m.attention_dropout_rate)
  model = transformers.BertForMaskedLM(hf_config).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4,
                                weight_decay=config.train.weight_decay)
  batch = random_batch(config, np.random.default_rng(0))
  ids = torch.from_numpy(batch['input_ids']).long()
  labels = torch.full_like(ids, -100)   # The same masked positions and labels.
  labels.scatter_(1, torch.from_numpy(batch['mlm_positions']).long(),
                  torch.from_numpy(batch['mlm_ids']).long())

  def run_step():
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
  return run_step


def time_checkpoint(config, directory: str) -> dict:
  """Seconds the train loop is blocked by a save, seconds until the save is
  on disk, its size, and seconds to restore it (what a resume costs)."""
  model = models.BertForMaskedLM(step_lib.model_config(config, config.model.vocab_size))
  importance = token_drop.init_importance(config.model.vocab_size, [2, 3, 4], [0])
  state = step_lib.create_train_state(config, model, importance, jax.random.PRNGKey(0))
  # Adam's moments start at zero and would compress away; a trained run's do not.
  noise = lambda x: x + 1e-3 * jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype)
  state = state.replace(opt_state=jax.tree.map(
      lambda x: noise(x) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x,
      state.opt_state))
  jax.block_until_ready(state)
  shape = checkpointing.model_shape(config)
  ckpt = checkpointing.Checkpointer(directory, keep=1)
  start = time.perf_counter()
  ckpt.save(1, state, {'position': 0}, shape)
  blocked = time.perf_counter() - start
  ckpt.wait()
  written = time.perf_counter() - start
  size = sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(ckpt.directory) for f in files)
  start = time.perf_counter()
  jax.block_until_ready(ckpt.restore(state, shape))
  restored = time.perf_counter() - start
  ckpt.close()
  return dict(params=sum(x.size for x in jax.tree.leaves(state.params)),
              save_blocking_s=blocked, save_total_s=written,
              size_mb=size / 2**20, restore_s=restored)


def run(config, cycles: int, hf: bool, variants=VARIANTS) -> dict:
  """One table: each variant's step time, ratios, model FLOP/s and MFU, and
  the PyTorch peer; with `cycles=0` only compile time and memory."""
  config_lib.validate(config)
  tokens = config.train.batch_size * config.data.seq_len
  runners, memory, compile_s = jax_runners(config, variants)
  hf_step = hf_pytorch_runner(config) if hf and cycles else None
  if hf_step:
    runners[HF_ROW] = hf_step
  times = time_interleaved(runners, cycles, config.sctd.fi)
  mb = {m: v and v / 2**20 for m, v in memory.items()}
  m = config.model
  result = dict(
      date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), machine=machine(),
      shape=dict(num_layers=m.num_layers, hidden_size=m.hidden_size,
                 num_heads=m.num_heads, intermediate_size=m.intermediate_size,
                 vocab_size=m.vocab_size, seq_len=config.data.seq_len,
                 batch_size=config.train.batch_size,
                 max_predictions=config.data.max_predictions,
                 keep_rate=config.token_drop.keep_rate, fi=config.sctd.fi,
                 dtype=str(step_lib.compute_dtype(m.dtype)), attention=m.attention,
                 scan_layers=m.scan_layers,
                 dropout_prng=step_lib.dropout_prng(config.train.dropout_prng),
                 mesh=list(sharding.mesh_shape(config.mesh, jax.device_count()))),
      compile_s=compile_s, memory_per_device_mb=mb)
  if not cycles:  # Compiled, not timed.
    return result
  peak, result['peak_source'] = cost_model.peak_flops()
  result['peak_flops_per_s'] = peak
  base = statistics.median(times['baseline'])

  def row(name, times, c):
    median = statistics.median(times)
    flops = cost_model.train_flops_per_step(c, c.method)
    return dict(method=name, step_time_s=median, tokens_per_s=tokens / median,
                ratio=median / base, cost_model_ratio=cost_model.step_ratios(c)[c.method],
                **cost_model.utilization(flops, median, peak))

  result['rows'] = []
  for name, method, share_prefix in variants:
    c = variant_config(config, method, share_prefix)
    result['rows'].append(dict(row(name, times[name], c),
                               compile_s=compile_s[name],
                               memory_per_device_mb=mb[name]))
  if hf_step:
    result['rows'].append(row(HF_ROW, times[HF_ROW],
                              variant_config(config, 'baseline', False)))
    result['threads'] = dict(jax=len(os.sched_getaffinity(0)),
                             torch=sys.modules['torch'].get_num_threads())
  return result


def predict(config, mfu: float = 0.5) -> str:
  """A table of the tokens/s the cost model predicts at `mfu` on each chip
  of the peak table, per variant: a prediction, not a measurement."""
  tokens = config.train.batch_size * config.data.seq_len
  chips = {chip: flops for chip, _, flops in cost_model.PEAK_FLOPS}
  lines = [f'Predicted training tokens/s per chip at {mfu:.0%} MFU (cost model; '
           f'not measured), seq {config.data.seq_len}, vocab {config.model.vocab_size}',
           f"{'method':<14}{'GFLOP/token':>12}" + ''.join(f'{c:>10}' for c in chips)]
  for name, method, share_prefix in VARIANTS:
    per_token = cost_model.train_flops_per_step(
        variant_config(config, method, share_prefix), method) / tokens
    lines.append(f'{name:<14}{per_token / 1e9:>12.3f}' + ''.join(
        f'{mfu * peak / per_token:>10.0f}' for peak in chips.values()))
  return '\n'.join(lines)


def time_data(config) -> dict:
  """The input pipeline alone, one process: tokens/s of batches from the
  corpus (tokenized and cached before the clock starts) and, for an hf: or
  files: corpus, the rate of tokenizing it into a fresh cache."""
  with tempfile.TemporaryDirectory() as scratch:
    tokenizer = tokenizer_lib.load_or_fit_tokenizer(config, scratch)
    out = {}
    d = config.data
    if not d.sources and d.source != 'synthetic' and not d.streaming:
      fresh = config.copy_and_resolve_references()
      fresh.data.cache_dir = os.path.join(scratch, 'cache')
      documents, column = readers.load_documents(readers.parse_source(d.source), fresh.data)
      megabytes = sum(len(t.encode()) for t in documents[column] if t) / 1e6
      start = time.perf_counter()
      sources.tokenize(documents, column, tokenizer, fresh.data)
      rate = megabytes / (time.perf_counter() - start)
      cores = len(os.sched_getaffinity(0))
      out.update(corpus_mb=megabytes, tokenize_mb_per_s=rate, cores=cores,
                 tokenize_mb_per_s_per_core=rate / cores)
    out['pipeline_tokens_per_s'] = pipeline.measure_throughput(config, tokenizer, num_batches=20)
  return out


def machine() -> str:
  return (f'{platform.machine()}, {os.cpu_count()} CPU cores, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}')


def format_table(result: dict) -> str:
  lines = [f"{result['date']}  {result['machine']}",
           'shape: ' + ', '.join(f'{k}={v}' for k, v in result['shape'].items()),
           f"peak {result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({result['peak_source']})"
           + ''.join(f', {k} {v} threads' for k, v in result.get('threads', {}).items()),
           f"{'method':<22}{'step ms':>9}{'tokens/s':>10}{'ratio':>7}{'cost model':>11}"
           f"{'GFLOP/s':>9}{'MFU':>7}{'compile s':>10}{'MB/device':>10}"]
  for r in result['rows']:
    compile_s, mb = r.get('compile_s'), r.get('memory_per_device_mb')
    lines.append(f"{r['method']:<22}{1e3 * r['step_time_s']:>9.1f}"
                 f"{r['tokens_per_s']:>10.0f}{r['ratio']:>7.3f}"
                 f"{r['cost_model_ratio']:>11.3f}{r['model_flops_per_s'] / 1e9:>9.1f}"
                 f"{r['mfu']:>7.1%}" + (f'{compile_s:>10.1f}' if compile_s else '')
                 + (f'{mb:>10.0f}' if mb else ''))
  return '\n'.join(lines)


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Config file giving the shape (default: config.bench_config(); '
      'configs/bench.py is the same and takes --config.KEY overrides).')
  flags.DEFINE_string('json', None, 'Also write the results here as JSON.')
  flags.DEFINE_integer(
      'cycles', 5, 'Timed cycles of Fi steps per method; 0 compiles only and '
      'reports memory per device.')
  flags.DEFINE_bool('hf', True, "Time HF's PyTorch BertForMaskedLM too, if installed.")
  flags.DEFINE_list(
      'variants', None, 'Only these rows of the step-time table or the profile, e.g. '
      'sctd,sctd_shared (default: all; baseline is always timed, ratios are to it).')
  flags.DEFINE_list(
      'vocab_sizes', None, 'One table per vocabulary size, e.g. 1024,30522 '
      "(the tiny config's and BERT's); default: the config's.")
  flags.DEFINE_bool(
      'data', False, "Instead of step times, the input pipeline's tokens/s alone "
      '(the config\'s data.source and tokenizer), one process, no model.')
  flags.DEFINE_bool(
      'compile', False, 'Instead of step times, the trace and compile time of '
      'the SCTD step with model.scan_layers off and on, from abstract shapes '
      '(no parameters allocated; fits BERT-large).')
  flags.DEFINE_bool('predict', False, 'Instead of step times, the tokens/s the cost '
                    'model predicts at 50% MFU on the peak table\'s chips.')
  flags.DEFINE_bool('matmuls', False, "Instead of step times, each of a layer's "
                    'matmul shapes alone, GFLOP/s in JAX and in PyTorch.')
  flags.DEFINE_string(
      'profile', None, 'Instead of step times, trace 3 steps of each method '
      'into this directory with jax.profiler and print the top HLO ops.')
  flags.DEFINE_string(
      'checkpoint', None, 'Instead of step times, time saving and restoring an '
      'Orbax checkpoint of the train state of this shape in this scratch directory.')


def main(argv):
  del argv
  args = flags.FLAGS
  config = args.config or config_lib.bench_config()
  if config.model.vocab_size == -1:
    config.model.vocab_size = 30522  # BERT's uncased vocabulary.
  if args.data:
    result = dict(date=time.strftime('%Y-%m-%d'), machine=machine(),
                  source=config.data.sources or config.data.source,
                  seq_len=config.data.seq_len, batch_size=config.train.batch_size,
                  **time_data(config))
    print(json.dumps(result, indent=2))
  elif args.predict:
    print(predict(config))
  elif args.compile:
    result = compile_times(config)
    print(format_compile_times(config, result))
  elif args.matmuls:
    result = matmuls.compare(config, with_torch=args.hf)
    print(matmuls.format_table(result))
  elif args.profile:
    for table in profile(config, args.profile,
                         select_variants(args.variants) if args.variants else VARIANTS[:3]):
      print(table, flush=True)
  elif args.checkpoint:
    result = dict(date=time.strftime('%Y-%m-%d'), machine=machine(),
                  checkpoint=time_checkpoint(config, args.checkpoint))
    print(json.dumps(result, indent=2))
  else:
    if not all(str(v).isdigit() and int(v) > 0 for v in args.vocab_sizes or []):
      raise cli.UserError(f'--vocab_sizes={",".join(args.vocab_sizes)}: give positive '
                          'whole numbers, e.g. --vocab_sizes=1024,30522.')
    result = []
    for vocab_size in args.vocab_sizes or [config.model.vocab_size]:
      c = config.copy_and_resolve_references()
      c.model.vocab_size = int(vocab_size)
      result.append(run(c, args.cycles, args.hf, select_variants(args.variants)))
      print(format_table(result[-1]) if args.cycles else json.dumps(result[-1], indent=2),
            flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
