"""The one config every run starts from, and its validation.

Files in `configs/` call `base_config()` and change what their scale needs, as
big_vision does; every key a run can read is declared here, so an override of
an unknown key fails at flag parsing and a bad value fails in `validate` with
the key's name.
"""

import json
import os
import re

import ml_collections

from sctd_jax import cli

METHODS = ('baseline', 'token_drop', 'sctd')
KL_NORMALIZERS = ('batch', 'masked_tokens')
OBJECTIVES = ('paper', 'released')
ACTIVATIONS = ('gelu', 'gelu_new', 'relu')
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
ATTENTIONS = ('auto', 'xla', 'cudnn')
POOLINGS = ('mean', 'cls')
ON_NONFINITE = ('stop', 'skip')
# jax.random implementations the dropout masks can be drawn with ('auto':
# step.dropout_prng).
DROPOUT_PRNGS = ('auto', 'threefry2x32', 'philox4x32')


# What a key absent from an older run's config.json meant when it was written,
# where that differs from today's default.
BEFORE_THE_KEY = {('model', 'scan_layers'): False,
                  ('train', 'dropout_prng'): 'threefry2x32'}


def saved(values: dict) -> ml_collections.ConfigDict:
  """The config of a run from its config.json `values`: today's keys with
  their defaults, the run's values over them, and BEFORE_THE_KEY for keys
  the run predates, so a workdir stays readable as keys are added."""
  c = base_config()
  for (section, key), value in BEFORE_THE_KEY.items():
    if key not in values.get(section, {}):
      c[section][key] = value
  c.update(values)
  return c


def differences(before: ml_collections.ConfigDict,
                after: ml_collections.ConfigDict) -> list[str]:
  """'key: before -> after' for each key whose value differs, as JSON
  values (so a tuple equals the list config.json holds)."""
  def leaves(values: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in values.items():
      out.update(leaves(value, f'{prefix}{key}.') if isinstance(value, dict)
                 else {f'{prefix}{key}': value})
    return out
  a, b = (leaves(json.loads(c.to_json())) for c in (before, after))
  return [f'{key}: {a.get(key)!r} -> {b.get(key)!r}'
          for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def base_config() -> ml_collections.ConfigDict:
  """Every key with the paper's value where it has one (docs/design.md section 1)."""
  c = ml_collections.ConfigDict()
  c.method = 'sctd'
  c.seed = 0
  c.init_from = ''  # HF BERT folder whose weights start the run (continued pretraining).

  c.model = ml_collections.ConfigDict(dict(
      vocab_size=-1,  # -1: the tokenizer's size.
      hidden_size=768,
      num_layers=12,
      num_heads=12,
      intermediate_size=3072,
      max_position_embeddings=512,
      type_vocab_size=2,
      hidden_act='gelu',  # Exact erf GELU, as BERT and HF's 'gelu'.
      dropout_rate=0.1,
      attention_dropout_rate=0.1,
      layer_norm_eps=1e-12,
      initializer_range=0.02,
      # Compute dtype; parameters, softmax, LayerNorm and losses stay float32.
      # 'auto': bfloat16 on GPU/TPU, float32 on CPU.
      dtype='auto',
      remat=False,  # Recompute each layer's activations in the backward pass.
      # Run each homogeneous run of layers (full prefix, kept-only middle, full
      # suffix; the cross layer apart) as one nn.scan over params stacked per
      # run, so compile time does not grow with depth (MaxText's scan_layers).
      # On, as in MaxText: see docs/performance.md for the cost on CPU.
      scan_layers=True,
      # jax.nn.dot_product_attention implementation. 'auto': cuDNN's fused
      # kernel on GPU with bf16/fp16 (where attention dropout is off), else XLA.
      attention='auto',
  ))

  c.token_drop = ml_collections.ConfigDict(dict(
      keep_rate=0.5,
      importance_beta=0.95,
      importance_init=10.0,
      # -1 picks the paper's layers: cross-attention layer l/2-1, last kept-only l-2.
      first_layer=-1,
      last_layer=-1,
  ))

  c.sctd = ml_collections.ConfigDict(dict(
      fi=10,
      lam=0.05,
      use_mlm_full=True,
      use_kl_local=True,
      use_kl_global=True,
      stop_grad_teacher=False,
      kl_normalizer='batch',
      # Beyond the paper: on SCTD steps the layers before the cross layer run
      # once for both forwards, which then share that prefix's dropout noise.
      share_prefix=False,
      # 'paper': Eq. 4. 'released': the authors' fairseq criterion on every
      # step (1.0 L*_MLM + lam (KL_g + KL_l), sums / non-pad input tokens);
      # see docs/evaluation.md.
      objective='paper',
  ))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=250_000,
      batch_size=1024,
      learning_rate=2e-4,
      end_learning_rate=0.0,
      lr_power=1.0,  # Polynomial decay power; 1.0 is linear.
      warmup_steps=25_000,
      weight_decay=0.01,
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=1e-6,
      grad_clip_norm=0.0,  # 0 disables clipping.
      grad_accum_steps=1,  # Micro-batches per optimizer step.
      log_every=100,
      eval_every=1000,
      eval_batches=4,
      checkpoint_every=5000,
      keep_checkpoints=3,
      # A step whose loss or gradient is NaN/inf: 'stop' ends the run;
      # 'skip' keeps the state as it was (bf16 runs at scale hit a few).
      on_nonfinite='stop',
      max_skipped=10,  # 'skip' stops after this many consecutive skipped steps.
      # Exit (non-zero) when one step takes longer, e.g. a stuck collective on
      # another host; 0 turns the watchdog off. See docs/troubleshooting.md.
      step_timeout_s=0.0,
      # Also keep every checkpoint of a step divisible by this, permanently
      # (a multiple of checkpoint_every); 0 keeps only the newest.
      keep_every=0,
      # jax.random implementation of the dropout masks (the state's key stays
      # threefry2x32). 'auto' is philox4x32 on CPU, where it is about 4x
      # cheaper per mask than threefry2x32 (JAX runs threefry as a rolled
      # loop there), and JAX's default threefry2x32 elsewhere, where neither
      # was measured (docs/performance.md).
      dropout_prng='auto',
  ))

  c.data = ml_collections.ConfigDict(dict(
      # 'synthetic' (built in), 'hf:NAME[:CONFIG][@SPLIT]' (datasets.load_dataset
      # or a save_to_disk folder) or 'files:GLOB' (.txt, .jsonl, .parquet).
      source='synthetic',
      # Several corpora mixed by weight, 'SPEC=WEIGHT;SPEC=WEIGHT...' (each SPEC
      # as source, e.g. 'files:wiki/*.jsonl=3;files:books/*.txt=1'); '': source.
      sources='',
      text_column='text',  # The documents' field in hf:, .jsonl and .parquet.
      streaming=False,  # Read hf:/files: as a stream, not tokenized and cached once.
      # Same forms as source; '' holds out the last validation_fraction of
      # the source's documents (synthetic has its own validation stream).
      validation_source='',
      validation_fraction=0.01,
      tokenizer='train',  # 'train': fit WordPiece on source; or an HF folder or name.
      vocab_size=30522,  # Size of the WordPiece vocabulary fitted on the corpus.
      tokenizer_docs=20_000,  # Documents the tokenizer is fitted on; -1: all.
      seq_len=512,
      mlm_probability=0.15,
      max_predictions=80,
      whole_word_masking=False,
      # Processes that tokenize a corpus (-1: one per CPU). Each already uses
      # every core; more help only where Python, not Rust, is the bottleneck.
      num_proc=1,
      cache_dir='',  # Token caches; '': ~/.cache/huggingface/datasets/sctd_jax.
      prefetch=4,  # Batches built ahead of the step (in a thread).
      # Processes building the batches (0: the prefetch thread alone). The
      # batches are the same for any number; streams take none.
      workers=0,
  ))

  # Semantic drift (paper Figure 3), logged every train.eval_every steps.
  c.drift = ml_collections.ConfigDict(dict(
      sentences=64,  # Fixed validation sequences measured; 0 turns drift off.
      # '': the model being trained; or a sentence encoder folder
      # (sentence-transformers or HF, run with PyTorch), as the paper's SentenceBERT.
      encoder='',
      pooling='mean',  # 'mean' or 'cls'; an encoder's 1_Pooling/config.json wins.
      # 'blocks': validation sequences as trained on; 'sentences': single
      # sentences of the training documents, as the paper (with a sentence
      # encoder as drift.encoder).
      text='blocks',
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,
      init_timeout_s=300,  # jax.distributed: a stalled process fails the job.
      # A process silent this long (killed, host lost) is declared dead and
      # the others exit non-zero instead of waiting for it forever.
      heartbeat_timeout_s=100,
  ))

  # Weights & Biases (pip install '.[wandb]'); process 0 logs every
  # metrics.jsonl row. WANDB_MODE=offline and WANDB_API_KEY work as usual.
  c.wandb = ml_collections.ConfigDict(dict(
      project='',  # '' turns W&B off.
      entity='',  # Team or user; '': the API key's default.
      name='',  # Display name; '': the workdir's name.
  ))
  return c


def bert_large_config() -> ml_collections.ConfigDict:
  """BERT-large (24 layers, hidden 1024, 16 heads) with the paper's recipe;
  a run must name its corpus (`data.source`): the toy grammar is no corpus
  for a model this size."""
  c = base_config()
  c.model.update(hidden_size=1024, num_layers=24, num_heads=16,
                 intermediate_size=4096)
  c.data.source = ''  # Required: --config.data.source=hf:... or files:...
  return c


def bench_config() -> ml_collections.ConfigDict:
  """The benchmark's shape: 12 layers, hidden 256, 4 heads, seq 128, batch 16,
  BERT's 30522-token vocabulary. Layers unscanned: at 12 layers the unrolled
  step runs 6-14% faster on CPU and takes less memory, though it compiles
  slower (docs/performance.md)."""
  c = base_config()
  c.model.update(vocab_size=30522, hidden_size=256, num_layers=12, num_heads=4,
                 intermediate_size=1024, scan_layers=False)
  c.train.update(batch_size=16)
  c.data.update(seq_len=128, max_predictions=20)
  return c


class ConfigError(cli.UserError):
  """A config value that cannot run; the message names the key."""


def check(ok: bool, key: str, value, want: str):
  """Raises ConfigError naming `key` and what it must be unless `ok`."""
  if not ok:
    raise ConfigError(f'config key {key}={value!r} is invalid: {want}.')


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key."""
  check(c.method in METHODS, 'method', c.method, f'use one of {METHODS}')
  check(not c.init_from or is_pretrained(c.init_from),
         'init_from', c.init_from, 'must be a Hugging Face BERT folder with a '
         'config.json (e.g. written by python -m sctd_jax.export) or a Hub id')
  m = c.model
  for key in ('hidden_size', 'num_layers', 'num_heads', 'intermediate_size',
              'max_position_embeddings', 'type_vocab_size'):
    check(m[key] > 0, f'model.{key}', m[key], 'must be a positive integer')
  check(m.vocab_size == -1 or m.vocab_size > 0, 'model.vocab_size', m.vocab_size,
         'use -1 (take the tokenizer size) or a positive integer')
  check(m.hidden_size % m.num_heads == 0, 'model.num_heads', m.num_heads,
         f'must divide model.hidden_size={m.hidden_size}')
  check(m.hidden_act in ACTIVATIONS, 'model.hidden_act', m.hidden_act,
         f'use one of {ACTIVATIONS}')
  check(isinstance(m.scan_layers, bool), 'model.scan_layers', m.scan_layers,
         'must be True or False')
  check(m.dtype in DTYPES, 'model.dtype', m.dtype, f'use one of {DTYPES}')
  check(m.attention in ATTENTIONS, 'model.attention', m.attention,
         f'use one of {ATTENTIONS}')
  check(m.attention != 'cudnn' or m.attention_dropout_rate == 0,
         'model.attention', m.attention, 'cudnn has no attention dropout: set '
         "model.attention_dropout_rate=0 or use 'auto'")
  for key in ('dropout_rate', 'attention_dropout_rate'):
    check(0.0 <= m[key] < 1.0, f'model.{key}', m[key], 'must be in [0, 1)')

  td = c.token_drop
  check(0.0 < td.keep_rate <= 1.0, 'token_drop.keep_rate', td.keep_rate,
         'must be in (0, 1]')
  check(0.0 <= td.importance_beta < 1.0, 'token_drop.importance_beta',
         td.importance_beta, 'must be in [0, 1)')
  if c.method != 'baseline':
    check(m.num_layers >= 3, 'model.num_layers', m.num_layers,
           'token dropping needs at least 3 layers (full, dropped, full)')
    first, last = drop_layers(c)
    want = (f'must be in [1, {m.num_layers - 2}] so at least one full layer '
            'comes before it and after the dropped ones')
    if td.first_layer == -1:  # The default: say what it picked and what to set.
      want = (f'-1 picks layer {first} (model.num_layers // 2 - 1) for '
              f'model.num_layers={m.num_layers}, but the layer {want}; set '
              'token_drop.first_layer=1')
    check(0 < first < m.num_layers - 1, 'token_drop.first_layer', td.first_layer, want)
    check(first <= last < m.num_layers - 1, 'token_drop.last_layer', last,
           f'must be in [{first}, {m.num_layers - 2}]')

  s = c.sctd
  check(s.fi >= 1, 'sctd.fi', s.fi, 'must be >= 1')
  check(s.lam >= 0.0, 'sctd.lam', s.lam, 'must be >= 0')
  check(s.kl_normalizer in KL_NORMALIZERS, 'sctd.kl_normalizer',
         s.kl_normalizer, f'use one of {KL_NORMALIZERS}')
  check(s.objective in OBJECTIVES, 'sctd.objective', s.objective,
         f'use one of {OBJECTIVES}')

  t = c.train
  for key in ('num_steps', 'batch_size', 'log_every', 'eval_every',
              'eval_batches', 'checkpoint_every', 'keep_checkpoints'):
    check(t[key] > 0, f'train.{key}', t[key], 'must be a positive integer')
  check(t.keep_every >= 0 and t.keep_every % t.checkpoint_every == 0,
         'train.keep_every', t.keep_every, '0 (off) or a multiple of '
         f'train.checkpoint_every={t.checkpoint_every}, so those steps are saved')
  check(t.learning_rate > 0, 'train.learning_rate', t.learning_rate, 'must be > 0')
  check(t.warmup_steps >= 0, 'train.warmup_steps', t.warmup_steps, 'must be >= 0')
  check(t.weight_decay >= 0, 'train.weight_decay', t.weight_decay, 'must be >= 0')
  check(t.grad_clip_norm >= 0, 'train.grad_clip_norm', t.grad_clip_norm,
         'must be >= 0 (0 disables clipping)')
  check(t.on_nonfinite in ON_NONFINITE, 'train.on_nonfinite', t.on_nonfinite,
        f'use one of {ON_NONFINITE}')
  check(t.dropout_prng in DROPOUT_PRNGS, 'train.dropout_prng', t.dropout_prng,
        f'use one of {DROPOUT_PRNGS}')
  check(t.max_skipped > 0, 'train.max_skipped', t.max_skipped,
        'must be a positive integer')
  check(t.step_timeout_s >= 0, 'train.step_timeout_s', t.step_timeout_s,
        'must be >= 0 seconds (0 turns the watchdog off)')
  check(t.grad_accum_steps >= 1 and t.batch_size % t.grad_accum_steps == 0,
         'train.grad_accum_steps', t.grad_accum_steps,
         f'must be >= 1 and divide train.batch_size={t.batch_size}')

  d = c.data
  check(d.source != '' or d.sources != '', 'data.source', d.source,
        'this config pretrains on a real corpus: set e.g. '
        '--config.data.source=hf:wikimedia/wikipedia:20231101.en or '
        "--config.data.source='files:/data/corpus/*.jsonl' ('synthetic' is "
        'the built-in toy grammar)')
  corpora = "use 'synthetic', 'hf:NAME[:CONFIG][@SPLIT]' or 'files:GLOB'"
  for key in ('source', 'validation_source'):
    kind, _, rest = d[key].partition(':')
    check(d[key] == 'synthetic' or (kind in ('hf', 'files') and rest != '') or
           (d[key] == '' and (key == 'validation_source' or d.sources != '')),
           f'data.{key}', d[key],
           corpora + (" or ''" if key == 'validation_source' else ''))
  check(0.0 <= d.validation_fraction < 1.0, 'data.validation_fraction',
         d.validation_fraction, 'must be in [0, 1)')
  if d.source not in ('synthetic', '') and not d.validation_source:
    check(not d.streaming, 'data.validation_source', d.validation_source,
           'must name a corpus when data.streaming is on (a stream cannot hold '
           'out documents)')
    check(d.validation_fraction > 0, 'data.validation_fraction',
           d.validation_fraction, "must be > 0 when data.validation_source is ''")
  if d.sources:
    check(not d.streaming, 'data.sources', d.sources,
          'cannot be combined with data.streaming (mix cached corpora)')
    check(d.validation_source or d.validation_fraction > 0, 'data.validation_fraction',
          d.validation_fraction, "must be > 0 when data.validation_source is ''")
  check(d.text_column != '', 'data.text_column', d.text_column, 'must name a field')
  check(d.tokenizer != '', 'data.tokenizer', d.tokenizer,
         "use 'train' or an HF tokenizer folder or name")
  check(d.num_proc == -1 or d.num_proc > 0, 'data.num_proc', d.num_proc,
         'use -1 (one per CPU) or a positive integer')
  check(4 <= d.seq_len <= m.max_position_embeddings, 'data.seq_len', d.seq_len,
         f'must be in [4, model.max_position_embeddings={m.max_position_embeddings}]')
  check(0.0 < d.mlm_probability < 1.0, 'data.mlm_probability',
         d.mlm_probability, 'must be in (0, 1)')
  check(0 < d.max_predictions <= d.seq_len, 'data.max_predictions',
         d.max_predictions, f'must be in [1, data.seq_len={d.seq_len}]')
  check(d.vocab_size >= 100, 'data.vocab_size', d.vocab_size, 'must be >= 100')
  check(d.tokenizer_docs > 0 or d.tokenizer_docs == -1, 'data.tokenizer_docs',
         d.tokenizer_docs, 'must be a positive integer or -1 (all)')
  check(d.prefetch >= 1, 'data.prefetch', d.prefetch, 'must be >= 1')
  check(d.workers >= 0, 'data.workers', d.workers, 'must be >= 0')
  check(not (d.streaming and d.workers), 'data.workers', d.workers,
        'must be 0 with data.streaming (a stream is read in order by one reader)')
  check(c.drift.sentences >= 0, 'drift.sentences', c.drift.sentences,
         'must be >= 0 (0 turns drift off)')
  check(c.drift.text in ('blocks', 'sentences'), 'drift.text', c.drift.text,
         "use 'blocks' or 'sentences'")
  check(c.drift.pooling in POOLINGS, 'drift.pooling', c.drift.pooling,
         f'use one of {POOLINGS}')
  check(not c.drift.encoder or os.path.isfile(os.path.join(c.drift.encoder, 'config.json')),
         'drift.encoder', c.drift.encoder, "must be '' (the model itself) or a "
         'sentence-transformers or HF encoder folder with a config.json')
  for key in ('data', 'fsdp', 'tensor'):
    check(c.mesh[key] == -1 or c.mesh[key] > 0, f'mesh.{key}', c.mesh[key],
           'use -1 (remaining devices) or a positive integer')
  for key in ('init_timeout_s', 'heartbeat_timeout_s'):
    check(c.mesh[key] > 0, f'mesh.{key}', c.mesh[key],
           'must be a positive number of seconds')


def clip_warmup(c: ml_collections.ConfigDict) -> str | None:
  """Shortens a warmup longer than the run to the run (a short trial of a
  long config is the first thing users try); returns the warning to log,
  or None when the warmup fits."""
  t = c.train
  if t.warmup_steps <= t.num_steps:
    return None
  message = (f'train.warmup_steps={t.warmup_steps} is longer than '
             f'train.num_steps={t.num_steps}: warming up over the {t.num_steps} '
             'steps instead; the learning rate peaks at the last step.')
  with c.unlocked():
    t.warmup_steps = t.num_steps
  return message


def is_hub_id(path: str) -> bool:
  """Whether `path` has the form of a Hub id ('name' or 'org/name') and is
  not a local path: 'runs/tiyn', where a folder runs/ exists, is a misspelt
  folder, not the Hub's 'runs' organisation."""
  return (re.fullmatch(r'[\w.-]+(/[\w.-]+)?', path) is not None and not path.startswith('.')
          and not ('/' in path and os.path.isdir(path.split('/')[0])))


def is_pretrained(path: str) -> bool:
  """Whether `path` can hold pretrained weights: a folder with a config.json
  (an HF folder or a training workdir) or, absent locally, a Hub id."""
  if os.path.exists(path):
    return os.path.isfile(os.path.join(path, 'config.json'))
  return is_hub_id(path)


def drop_layers(c: ml_collections.ConfigDict) -> tuple[int, int]:
  """(cross-attention layer, last kept-only layer), 0-indexed (docs/design.md section 1)."""
  num_layers = c.model.num_layers
  first = c.token_drop.first_layer
  last = c.token_drop.last_layer
  return (num_layers // 2 - 1 if first == -1 else first,
          num_layers - 2 if last == -1 else last)
