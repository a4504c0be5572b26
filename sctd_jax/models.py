"""BERT for masked language modelling, with the token-dropping forward.

The parameter tree mirrors Hugging Face's `BertForMaskedLM` name for name
(`bert/encoder/layer/3/attention/self/query/kernel` is
`bert.encoder.layer.3.attention.self.query.weight` transposed), so export is a
rename. Every parameter carries logical axis names (`vocab`, `embed`, `heads`,
`mlp`) for the sharding rules, as in MaxText.

The same weights serve two forwards (paper section 2.1, docs/design.md section 1):
`keep_indices=None` runs every layer on all S tokens; with `keep_indices`
([B, k], sorted) layers before `first_layer` see all tokens, `first_layer`
attends from the k kept tokens to all S (cross-attention), layers up to
`last_layer` see only the kept tokens, which are then scattered back over the
layer-`first_layer - 1` states for the remaining full layers.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sctd_jax import scan_layers
from sctd_jax import token_drop


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = 'gelu'
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  # The PRNG that draws dropout masks: 'threefry2x32' | 'philox4x32' (Dropout).
  dropout_prng: str = 'threefry2x32'
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  remat: bool = False
  # Scan each homogeneous run of layers (scan_layers.py); params stacked per run.
  scan_layers: bool = True
  # 'auto' | 'xla' | 'cudnn': jax.nn.dot_product_attention's implementation.
  attention: str = 'auto'
  # Token-dropping layer range, 0-indexed (docs/design.md section 1).
  first_drop_layer: int = 5
  last_drop_layer: int = 10
  # On a mesh, the sharding of [B, ...] activations (rows over data x fsdp,
  # the rest replicated); step.make_train_step sets it. None: unconstrained.
  activation_sharding: Any = None


def gelu_erf(x):
  """Exact GELU as BERT and PyTorch write it, x/2 (1 + erf(x/sqrt 2)):
  on XLA:CPU its forward and backward take about 0.8x the time of
  jax.nn.gelu's erfc form (docs/performance.md)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.sqrt(0.5).astype(x.dtype)))


ACTIVATIONS = {
    'gelu': gelu_erf,
    'gelu_new': lambda x: nn.gelu(x, approximate=True),
    'relu': nn.relu,
}


def _dense(cfg: BertConfig, features: int, axes: tuple[str, str], name: str):
  init = nn.initializers.normal(cfg.initializer_range)
  return nn.Dense(
      features, dtype=cfg.dtype, param_dtype=jnp.float32, name=name,
      kernel_init=nn.with_logical_partitioning(init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))


def constrain(cfg: BertConfig, x: jax.Array) -> jax.Array:
  """Pins activations to `cfg.activation_sharding` (forward and, through
  its transpose, the cotangent). Left to itself, XLA's SPMD partitioner
  miscompiles the gradient of the head's transform kernel on a mesh with
  data, fsdp and tensor all above 1 (jax 0.10.2: 1.4 relative error, see
  tests/test_sharding.py); pinned hidden states, as MaxText pins its
  activations, give one device's gradients."""
  if cfg.activation_sharding is None:
    return x
  return jax.lax.with_sharding_constraint(x, cfg.activation_sharding)


def _layer_norm(cfg: BertConfig, name: str = 'LayerNorm'):
  # float32 statistics whatever the compute dtype.
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=jnp.float32,
      name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)))


class Dropout(nn.Dropout):
  """Flax's Dropout with its mask bits drawn by `prng`. The 'dropout'
  stream's keys stay JAX's threefry2x32 keys, which XLA:CPU compiles as a
  loop: deriving every key with philox4x32 unrolled its rounds at each
  derivation, and the bench shape's SCTD step took 70 s to compile instead
  of 43 s (docs/performance.md). With threefry2x32 it is nn.Dropout, bit
  for bit."""
  prng: str = 'threefry2x32'

  def __call__(self, inputs, deterministic=None, rng=None):
    if (rng is None and self.prng != 'threefry2x32' and 0 < self.rate < 1
        and not nn.merge_param('deterministic', self.deterministic, deterministic)):
      key = self.make_rng(self.rng_collection)
      rng = jax.random.wrap_key_data(jax.random.key_data(key), impl=self.prng)
    return super().__call__(inputs, deterministic, rng)


def _dropout(cfg: BertConfig, rate: float):
  return Dropout(rate, prng=cfg.dropout_prng)


def _embed(cfg: BertConfig, num: int, axes: tuple[str, str], name: str):
  init = nn.initializers.normal(cfg.initializer_range)
  return nn.Embed(num, cfg.hidden_size, dtype=cfg.dtype,
                  param_dtype=jnp.float32, name=name,
                  embedding_init=nn.with_logical_partitioning(init, axes))


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""
  cfg: BertConfig

  def setup(self):
    cfg = self.cfg
    self.word_embeddings = _embed(cfg, cfg.vocab_size, ('vocab', 'embed'),
                                  'word_embeddings')
    self.position_embeddings = _embed(cfg, cfg.max_position_embeddings,
                                      (None, 'embed'), 'position_embeddings')
    self.token_type_embeddings = _embed(cfg, cfg.type_vocab_size,
                                        (None, 'embed'), 'token_type_embeddings')
    self.LayerNorm = _layer_norm(cfg)
    self.dropout = _dropout(cfg, cfg.dropout_rate)

  def __call__(self, input_ids, token_type_ids, deterministic):
    positions = jnp.arange(input_ids.shape[-1])[None, :]
    x = (self.word_embeddings(input_ids)
         + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))
    x = self.LayerNorm(x).astype(self.cfg.dtype)
    return self.dropout(x, deterministic=deterministic)


def attention_implementation(name: str, dtype, dropout: bool) -> str:
  """'auto' is cuDNN's fused kernel on GPU with bf16/fp16, else XLA's.

  jax.nn.dot_product_attention has no attention dropout, so 'auto' takes
  the XLA path whenever dropout is active (config.validate refuses 'cudnn'
  with attention dropout)."""
  if name != 'auto':
    return name
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  fused = jax.default_backend() == 'gpu' and half and not dropout
  return 'cudnn' if fused else 'xla'


def attend(q, k, v, kv_mask, implementation: str, dropout=None):
  """softmax(q k^T / sqrt(h)) v over the keys where `kv_mask` [B, S_kv] is True.

  q [B, T, N, H], k and v [B, S_kv, N, H]. Logits and softmax are float32.
  `dropout` (a function of the probabilities) forces the unfused einsum path,
  the only one whose probabilities exist to drop."""
  mask = kv_mask[:, None, None, :]
  # JAX's XLA attention dots float16 into float32, which XLA:CPU cannot do;
  # float16 there takes the einsum path below (cuDNN serves it on GPUs).
  fused = not (q.dtype == jnp.float16 and implementation == 'xla')
  if dropout is None and fused:
    return jax.nn.dot_product_attention(q, k, v, mask=mask,
                                        implementation=implementation)
  if q.dtype == jnp.float16:
    q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  scores = jnp.einsum('bqhd,bkhd->bhqk', q, k,
                      preferred_element_type=jnp.float32) / jnp.sqrt(q.shape[-1])
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum('bhqk,bkhd->bqhd', probs.astype(v.dtype), v)


class SelfAttention(nn.Module):
  """Multi-head attention from `x_q` to `x_kv`: full, cross (kept queries,
  all keys) or kept-only, as the caller passes; `kv_mask` masks the keys."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, x_q, x_kv, kv_mask, deterministic):
    cfg = self.cfg
    heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    split = lambda t: t.reshape(*t.shape[:2], heads, head_dim)
    q = split(_dense(cfg, cfg.hidden_size, ('embed', 'heads'), 'query')(x_q))
    k = split(_dense(cfg, cfg.hidden_size, ('embed', 'heads'), 'key')(x_kv))
    v = split(_dense(cfg, cfg.hidden_size, ('embed', 'heads'), 'value')(x_kv))
    dropout = None
    if not deterministic and cfg.attention_dropout_rate > 0:
      dropout = functools.partial(_dropout(cfg, cfg.attention_dropout_rate),
                                  deterministic=False)
    impl = attention_implementation(cfg.attention, cfg.dtype, dropout is not None)
    out = attend(q, k, v, kv_mask, impl, dropout)
    return out.reshape(*out.shape[:2], cfg.hidden_size)


class AddNorm(nn.Module):
  """HF's `*Output` block: dense, dropout, residual, LayerNorm."""
  cfg: BertConfig
  axes: tuple[str, str]

  @nn.compact
  def __call__(self, x, residual, deterministic):
    x = _dense(self.cfg, self.cfg.hidden_size, self.axes, 'dense')(x)
    x = _dropout(self.cfg, self.cfg.dropout_rate)(x, deterministic=deterministic)
    return _layer_norm(self.cfg)(x + residual).astype(self.cfg.dtype)


class Attention(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x_q, x_kv, kv_mask, deterministic):
    a = SelfAttention(self.cfg, name='self')(x_q, x_kv, kv_mask, deterministic)
    return AddNorm(self.cfg, ('heads', 'embed'), name='output')(a, x_q, deterministic)


class Intermediate(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x):
    x = _dense(self.cfg, self.cfg.intermediate_size, ('embed', 'mlp'), 'dense')(x)
    return ACTIVATIONS[self.cfg.hidden_act](x)


class Layer(nn.Module):
  """One post-LN encoder layer. Queries come from `x_q`, keys/values from
  `x_kv`: the same array in full and kept-only layers, the kept subset and the
  full sequence in the cross-attention layer. Residual and FFN follow `x_q`."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, x_q, x_kv, kv_mask, deterministic):
    cfg = self.cfg
    x = Attention(cfg, name='attention')(x_q, x_kv, kv_mask, deterministic)
    h = Intermediate(cfg, name='intermediate')(x)
    return constrain(cfg, AddNorm(cfg, ('mlp', 'embed'), name='output')(h, x, deterministic))


class LayerStack(nn.Module):
  """HF's `encoder.layer` list, with the token-drop schedule over it."""
  cfg: BertConfig

  def setup(self):
    # Remat keeps parameter paths; argument 4 (`deterministic`) is static.
    # In a scanned run the loop already keeps XLA from merging the
    # recomputation away (MaxText's prevent_cse=not scan_layers).
    cfg = self.cfg
    self.runs = scan_layers.layer_runs(cfg)
    self.layers = [(nn.remat(Layer, static_argnums=(4,), prevent_cse=not run.stacked)
                    if cfg.remat else Layer)(cfg, name=run.name) for run in self.runs]

  def _run(self, index, x, x_kv, mask, deterministic, keep_hidden):
    """Applies run `index`: (its output, its layers' [CLS] states [n, B, d]
    and, if `keep_hidden`, hidden states [n, B, T, d])."""
    run, layer = self.runs[index], self.layers[index]
    if not run.stacked:
      x = layer(x, x_kv, mask, deterministic)
      return x, x[None, :, 0], [x] if keep_hidden else None

    def body(module, carry, mask, deterministic):
      y = module(carry, carry, mask, deterministic)
      return y, (y[:, 0], y if keep_hidden else None)

    scan = nn.scan(body, variable_axes={'params': 0, 'intermediates': 0},
                   split_rngs={'params': True, 'dropout': True},
                   in_axes=(nn.broadcast, nn.broadcast), length=run.stop - run.start,
                   metadata_params={nn.PARTITION_NAME: 'layers'})
    x, (cls, hidden) = scan(layer, x, mask, deterministic)
    return x, cls, None if hidden is None else list(hidden)

  def __call__(self, x, mask, keep_indices, deterministic, start=0, stop=None):
    """Runs layers `start` to `stop - 1` (default: all) on `x`, the input of
    layer `start`; with `keep_indices`, `start` must not pass the cross
    layer. Under `scan_layers`, `start` and `stop` must bound runs.

    Returns the last hidden states [B, S, d] and each run layer's [CLS] state
    [stop - start, B, d] (the kept set always holds [CLS] at index 0). Each
    layer's output is also sown as `intermediates/.../hidden_states`, read by
    probing with `mutable='intermediates'` and free otherwise."""
    cfg = self.cfg
    first, last = cfg.first_drop_layer, cfg.last_drop_layer
    stop = cfg.num_layers if stop is None else stop
    keep_hidden = self.is_mutable_collection('intermediates')
    cls_states = []
    for index, run in enumerate(self.runs):
      if run.stop <= start or run.start >= stop:
        continue
      if run.start < start or run.stop > stop:
        raise ValueError(f'Layers {start} to {stop - 1} split the scanned run '
                         f'{run.name}: start and stop must bound runs.')
      x_kv, kv_mask = x, mask  # The cross layer's keys: all tokens.
      if keep_indices is not None and run.start == first:
        full_x, full_mask = x, mask
        x, mask = (token_drop.gather(x, keep_indices),
                   token_drop.gather(mask, keep_indices))
      x, cls, hidden = self._run(index, x, x_kv, kv_mask, deterministic, keep_hidden)
      if keep_indices is not None and run.stop - 1 == last:
        x, mask = token_drop.scatter(full_x, keep_indices, x), full_mask
        hidden = hidden if hidden is None else [*hidden[:-1], x]
      for h in (() if hidden is None else hidden):
        self.sow('intermediates', 'hidden_states', h)
      cls_states.append(cls)
    return x, jnp.concatenate(cls_states)


class Encoder(nn.Module):
  cfg: BertConfig

  def setup(self):
    self.layer = LayerStack(self.cfg)

  def __call__(self, x, mask, keep_indices, deterministic, start=0, stop=None):
    return self.layer(x, mask, keep_indices, deterministic, start, stop)


class Pooler(nn.Module):
  """Dense + tanh on [CLS]; kept for HF's sequence-classification heads."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(_dense(self.cfg, self.cfg.hidden_size, ('embed', 'mlp'),
                           'dense')(x[:, 0]))


class BertModel(nn.Module):
  cfg: BertConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    self.encoder = Encoder(self.cfg)
    self.pooler = Pooler(self.cfg)

  def __call__(self, input_ids, token_type_ids, attention_mask, keep_indices,
               deterministic):
    x = self.embeddings(input_ids, token_type_ids, deterministic)
    x, cls_states = self.encoder(x, attention_mask.astype(bool), keep_indices,
                                 deterministic)
    return x, cls_states, self.pooler(x)


class Transform(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x):
    x = _dense(self.cfg, self.cfg.hidden_size, ('embed', 'mlp'), 'dense')(x)
    return _layer_norm(self.cfg)(ACTIVATIONS[self.cfg.hidden_act](x))


class PredictionHead(nn.Module):
  """Transform, then the decoder tied to the word embeddings, plus a bias."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, embeddings: nn.Embed):
    x = constrain(self.cfg, Transform(self.cfg, name='transform')(x)).astype(self.cfg.dtype)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros, ('vocab',)), (self.cfg.vocab_size,), jnp.float32)
    return embeddings.attend(x).astype(jnp.float32) + bias


class MLMHead(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, embeddings):
    return PredictionHead(self.cfg, name='predictions')(x, embeddings)


def _default_inputs(input_ids, token_type_ids, attention_mask):
  """Segment 0 and no padding where not given."""
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  return token_type_ids, attention_mask


class MLMOutput(NamedTuple):
  logits: jax.Array       # [B, P, V] at `mlm_positions`, or [B, S, V].
  cls_states: jax.Array   # [num_layers, B, d], each layer's [CLS] output.


class BertForMaskedLM(nn.Module):
  """`__call__` is the `load_pretrained` contract (docs/design.md section 3):
  MLM logits [B, S, V] of the deterministic full path. Training calls
  `forward`, which also takes the masked positions and the kept indices."""
  cfg: BertConfig

  def setup(self):
    self.bert = BertModel(self.cfg)
    self.cls = MLMHead(self.cfg)

  def forward(self, input_ids, token_type_ids=None, attention_mask=None,
              mlm_positions=None, keep_indices=None, deterministic=True):
    """MLM logits at `mlm_positions` ([B, P], static P) or at every position.

    `keep_indices` ([B, k], ascending) selects the token-dropping forward."""
    token_type_ids, attention_mask = _default_inputs(input_ids, token_type_ids,
                                                     attention_mask)
    x, cls_states, _ = self.bert(input_ids, token_type_ids, attention_mask,
                                 keep_indices, deterministic)
    return self._head(x, cls_states, mlm_positions)

  def forward_shared(self, input_ids, token_type_ids, attention_mask,
                     mlm_positions, keep_indices, deterministic=True):
    """SCTD's dropped and full forwards, (dropped, full), with the layers
    before the cross layer run once for both (`sctd.share_prefix`, beyond
    the paper): both branches then share that prefix's dropout noise."""
    token_type_ids, attention_mask = _default_inputs(input_ids, token_type_ids,
                                                     attention_mask)
    mask, first = attention_mask.astype(bool), self.cfg.first_drop_layer
    x = self.bert.embeddings(input_ids, token_type_ids, deterministic)
    x, prefix_cls = self.bert.encoder(x, mask, None, deterministic, stop=first)
    outputs = []
    for indices in (keep_indices, None):
      h, cls_states = self.bert.encoder(x, mask, indices, deterministic, start=first)
      outputs.append(self._head(h, jnp.concatenate([prefix_cls, cls_states]),
                                mlm_positions))
    return tuple(outputs)

  def _head(self, x, cls_states, mlm_positions):
    if mlm_positions is not None:
      x = jnp.take_along_axis(x, mlm_positions[..., None], axis=1)
    logits = self.cls(x, self.bert.embeddings.word_embeddings)
    return MLMOutput(logits, cls_states)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None,
             keep_indices=None, deterministic=True):
    """The last layer's hidden states [B, S, d], full or token-dropping path."""
    token_type_ids, attention_mask = _default_inputs(input_ids, token_type_ids,
                                                     attention_mask)
    return self.bert(input_ids, token_type_ids, attention_mask, keep_indices,
                     deterministic)[0]

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None):
    return self.forward(input_ids, token_type_ids, attention_mask).logits


class BertForSequenceClassification(nn.Module):
  """HF's `BertForSequenceClassification`: the pooled [CLS] state, dropout,
  and a linear classifier; `num_labels=1` is regression (STS-B). Its `bert`
  subtree is the one `BertForMaskedLM` pretrains."""
  cfg: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic=True):
    _, _, pooled = BertModel(self.cfg, name='bert')(
        input_ids, token_type_ids, attention_mask, None, deterministic)
    pooled = _dropout(self.cfg, self.cfg.dropout_rate)(pooled, deterministic=deterministic)
    logits = _dense(self.cfg, self.num_labels, ('embed', None), 'classifier')(pooled)
    return logits.astype(jnp.float32)


def init_params(model: nn.Module, rng: jax.Array):
  """Plain float32 params of `model` (logical-axis metadata stripped)."""
  return nn.meta.unbox(model.init(rng, jnp.zeros((1, 8), jnp.int32))['params'])
