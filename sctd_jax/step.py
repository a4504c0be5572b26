"""The train state, the optimizer, and the one compiled `train_step`.

The branch choice of SCTD's hybrid training (paper Eq. 4, Figure 5) is the
`lax.cond` in `train_step`: on `step % fi == 0` both forwards run and the
semantic-consistent objective is used, otherwise plain token dropping. The
predicate reads the step counter inside the state, so a whole run compiles
the function once; `baseline` and `token_drop` are the same step with a fixed
branch.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.interpreters import mlir
import optax

from sctd_jax import config as config_lib
from sctd_jax import faults
from sctd_jax import losses
from sctd_jax import models
from sctd_jax import sharding
from sctd_jax import token_drop

# Batch layout produced by the input pipeline; P = data.max_predictions.
BATCH_KEYS = ('input_ids', 'token_type_ids', 'attention_mask',   # [B, S]
              'mlm_positions', 'mlm_ids', 'mlm_weights')         # [B, P]


class TrainState(train_state.TrainState):
  """Everything a step reads and writes: params, optimizer state, step, the
  token-importance table (state, not a parameter) and the base RNG key."""
  importance: jax.Array
  rng: jax.Array


def learning_rate_schedule(peak: float, warmup_steps: int, num_steps: int,
                           end: float = 0.0, power: float = 1.0) -> optax.Schedule:
  """Linear warmup to `peak`, then polynomial decay to `end` (power 1: linear)."""
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  decay = optax.polynomial_schedule(peak, end, power, max(1, num_steps - warmup_steps))
  return optax.join_schedules([warmup, decay], [warmup_steps])


def pretraining_schedule(t) -> optax.Schedule:
  """The schedule of the pretraining config's `train` keys."""
  return learning_rate_schedule(t.learning_rate, t.warmup_steps, t.num_steps,
                                t.end_learning_rate, t.lr_power)


def decay_mask(params) -> Any:
  """Weight decay on weights and embeddings, not on biases or LayerNorm."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key not in ('bias', 'scale'), params)


def make_optimizer(schedule: optax.Schedule, t) -> optax.GradientTransformation:
  """AdamW (decoupled decay, Loshchilov & Hutter), optional global-norm clip,
  from `t`'s adam_b1, adam_b2, adam_eps, weight_decay and grad_clip_norm,
  keys of both the pretraining and the fine-tuning config."""
  adamw = optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2,
                      eps=t.adam_eps, weight_decay=t.weight_decay,
                      mask=decay_mask)
  if t.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), adamw)
  return adamw


def model_config(config, vocab_size: int) -> models.BertConfig:
  """The model's own config from the run's (the model never reads the run
  config), with the token-dropping layers resolved."""
  m = config.model
  first, last = config_lib.drop_layers(config)
  return models.BertConfig(
      vocab_size=vocab_size, hidden_size=m.hidden_size,
      num_layers=m.num_layers, num_heads=m.num_heads,
      intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings,
      type_vocab_size=m.type_vocab_size, hidden_act=m.hidden_act,
      dropout_rate=m.dropout_rate,
      attention_dropout_rate=m.attention_dropout_rate,
      dropout_prng=dropout_prng(config.train.dropout_prng),
      layer_norm_eps=m.layer_norm_eps, initializer_range=m.initializer_range,
      dtype=compute_dtype(m.dtype), remat=m.remat, scan_layers=m.scan_layers,
      attention=m.attention,
      first_drop_layer=first, last_drop_layer=last)


def compute_dtype(name: str) -> jnp.dtype:
  """model.dtype; 'auto' is bfloat16 on GPU/TPU (where it pays), float32 on CPU."""
  if name == 'auto':
    return jnp.dtype(jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16)
  return jnp.dtype(name)


def dropout_prng(name: str) -> str:
  """train.dropout_prng; 'auto' is philox4x32 on CPU, threefry2x32 elsewhere.
  Resolving to philox4x32 registers its mesh-safe lowering (below).

  XLA:CPU runs jax's threefry as a rolled loop of five round groups, each
  writing its whole array, so there a mask costs about 4x philox4x32's
  (docs/performance.md). On GPUs and TPUs neither was measured, so JAX's
  default stays."""
  if name == 'auto':
    name = 'philox4x32' if jax.default_backend() == 'cpu' else 'threefry2x32'
  if name == 'philox4x32':
    _lower_mulhi_widened()
  return name


@functools.cache
def _lower_mulhi_widened() -> None:
  """Lowers `lax.mulhi` (philox's multiply) the way JAX did before jaxlib had
  `chlo.mulhi`: widen, multiply, shift. jaxlib 0.10.2's sharding pass cannot
  convert `chlo.mulhi` back to StableHLO ("Unable to convert MHLO to
  StableHLO"), so philox masks failed on every sharded mesh. The widened form
  is what `chlo.mulhi` decomposes to: the same bits (tests/test_cpu_speed.py),
  on any mesh (tests/test_sharding.py). Process-wide, once."""
  from jax._src.lax import lax as lax_internal   # pylint: disable=g-import-not-at-top
  widened = getattr(lax_internal, '_mulhi_impl', None)
  if widened is None:   # A JAX without it: its own lowering must then partition.
    logging.warning('jax %s has no widened mulhi lowering; philox4x32 dropout masks '
                    'may fail to compile on a sharded mesh (then set '
                    'train.dropout_prng=threefry2x32).', jax.__version__)
    return
  mlir.register_lowering(lax_internal.mulhi_p,
                         mlir.lower_fun(widened, multiple_results=False))


def create_train_state(config, model: models.BertForMaskedLM,
                       importance: jax.Array, rng: jax.Array) -> TrainState:
  params_rng, step_rng = jax.random.split(rng)
  state = TrainState.create(
      apply_fn=model.apply, params=models.init_params(model, params_rng),
      tx=make_optimizer(pretraining_schedule(config.train), config.train),
      importance=importance, rng=step_rng)
  # An array step, not Python's 0, so the first call has the signature of
  # every later one and the step compiles once.
  return state.replace(step=jnp.zeros((), jnp.int32))


def create_sharded_train_state(config, model: models.BertForMaskedLM,
                               importance: jax.Array, rng: jax.Array, mesh):
  """The train state initialised directly in its layout on `mesh` (no host
  copy of the full model); returns (state, its shardings)."""
  create = lambda key: create_train_state(config, model, importance, key)
  shardings = sharding.state_shardings(model, mesh, jax.eval_shape(create, rng))
  return jax.jit(create, out_shardings=shardings)(rng), shardings


class StepOutput(NamedTuple):
  loss: jax.Array
  metrics: dict
  token_losses: jax.Array   # Dropped branch's per-slot MLM loss, for importance.


def _losses(model, config, params, batch, keep_indices, rng, branch: str,
            num_targets, num_examples, num_inputs):
  """Loss of one branch: 'full' (baseline), 'drop' (L*_MLM) or 'sctd' (Eq. 4),
  normalised by the whole optimizer step's target, example and input-token
  counts so that micro-batch losses add up to the full batch's."""
  def forward(indices, key):
    return model.apply(
        {'params': params}, batch['input_ids'], batch['token_type_ids'],
        batch['attention_mask'], batch['mlm_positions'], indices,
        deterministic=False, rngs={'dropout': key}, method=model.forward)

  def mlm(out):
    return losses.mlm_loss(out.logits, batch['mlm_ids'], batch['mlm_weights'],
                           num_targets)

  nan = jnp.full((), jnp.nan, jnp.float32)
  metrics = dict.fromkeys(losses.OPTIONAL_METRICS, nan)
  drop_key, full_key = jax.random.split(rng)
  if branch == 'full':
    full = mlm(forward(None, full_key))
    metrics.update(loss=full.mean, mlm_full=full.mean)
    return StepOutput(full.mean, metrics, full.per_token)
  if branch == 'sctd' and config.sctd.share_prefix:
    out_drop, out_full = model.apply(
        {'params': params}, batch['input_ids'], batch['token_type_ids'],
        batch['attention_mask'], batch['mlm_positions'], keep_indices,
        deterministic=False, rngs={'dropout': drop_key},
        method=model.forward_shared)
  else:
    out_drop = forward(keep_indices, drop_key)
  drop = mlm(out_drop)
  if branch == 'drop':
    loss = drop.mean
    if config.sctd.objective == 'released':  # Their criterion on every step.
      loss = losses.per_input_token(drop.mean, num_targets, num_inputs)
    metrics.update(loss=loss, mlm_drop=drop.mean)
    return StepOutput(loss, metrics, drop.per_token)
  if not config.sctd.share_prefix:
    out_full = forward(None, full_key)
  terms = losses.sctd_objective(
      drop.mean, mlm(out_full).mean, out_full.cls_states, out_drop.cls_states,
      num_targets, config.sctd, num_examples, num_inputs)
  metrics.update(terms._asdict())
  return StepOutput(terms.loss, metrics, drop.per_token)


def make_train_step(model: models.BertForMaskedLM, config, shardings=None):
  """Returns the jitted `train_step(state, batch) -> (state, metrics)`.

  `shardings` = (state shardings, batch sharding, replicated) from
  `sharding.py` places the step on a mesh; the program is the same on every
  mesh. The state argument is donated: the caller must not reuse it."""
  method, fi = config.method, config.sctd.fi
  accum = config.train.grad_accum_steps
  if shardings is not None:  # Hidden states keep the batch's layout.
    model = model.clone(cfg=dataclasses.replace(model.cfg,
                                                activation_sharding=shardings[1]))
  schedule = pretraining_schedule(config.train)

  def grads_of(branch, params, batch, keep_indices, rng, counts):
    fn = lambda p: (lambda o: (o.loss, o))(
        _losses(model, config, p, batch, keep_indices, rng, branch, *counts))
    (_, out), grads = jax.value_and_grad(fn, has_aux=True)(params)
    return out, grads

  def accumulated(branch, params, batch, keep_indices, rng):
    """Gradients summed over `accum` micro-batches: each micro-batch loss is
    normalised by the whole batch's counts, so the sum is the big batch's."""
    counts = (jnp.sum(batch['mlm_weights']), batch['input_ids'].shape[0],
              jnp.sum(batch['attention_mask']))
    split = lambda x: x.reshape(accum, -1, *x.shape[1:])
    xs = (jax.tree.map(split, batch),
          None if keep_indices is None else split(keep_indices), jnp.arange(accum))

    def body(grad_sum, x):
      micro_batch, kept, i = x
      out, grads = grads_of(branch, params, micro_batch, kept,
                            jax.random.fold_in(rng, i), counts)
      return jax.tree.map(jnp.add, grad_sum, grads), out

    grads, outs = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), xs)
    return StepOutput(outs.loss.sum(), jax.tree.map(jnp.sum, outs.metrics),
                      outs.token_losses.reshape(-1, outs.token_losses.shape[-1])), grads

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    select_key, drop_key = jax.random.split(rng)
    keep_indices = None
    if method != 'baseline':
      k = token_drop.keep_count(batch['input_ids'].shape[1],
                                config.token_drop.keep_rate)
      keep_indices = token_drop.select_kept(state.importance,
                                            batch['input_ids'], k, select_key)
    args = (state.params, batch, keep_indices, drop_key)
    # The branch is chosen once per optimizer step, for all its micro-batches.
    is_sctd_step = jnp.logical_and(method == 'sctd', state.step % fi == 0)
    if method == 'baseline':
      out, grads = accumulated('full', *args)
    elif method == 'token_drop':
      out, grads = accumulated('drop', *args)
    else:
      out, grads = jax.lax.cond(
          is_sctd_step,
          functools.partial(accumulated, 'sctd'),
          functools.partial(accumulated, 'drop'), *args)
    importance = state.importance
    if method != 'baseline':
      importance = token_drop.update_importance(
          importance, batch['mlm_ids'], out.token_losses, batch['mlm_weights'],
          config.token_drop.importance_beta)
    grad_norm = optax.tree.norm(grads)
    metrics = dict(out.metrics, grad_norm=grad_norm,
                   learning_rate=schedule(state.step), sctd_step=is_sctd_step)
    update = lambda s: s.apply_gradients(grads=grads).replace(importance=importance)
    if config.train.on_nonfinite == 'skip':
      new_state, metrics['skipped'] = faults.keep_if_finite(
          state, update, out.loss, grad_norm)
    else:
      new_state, metrics['skipped'] = update(state), jnp.zeros((), bool)
    return new_state, metrics

  if shardings is None:
    return jax.jit(train_step, donate_argnums=0)
  state_sharding, batch_sharding, replicated = shardings
  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, replicated))


def make_eval_step(model: models.BertForMaskedLM, config):
  """Validation MLM loss, deterministic, on the full path and (unless
  baseline) the dropped path: returns summed loss and target counts."""
  def eval_step(state: TrainState, batch: dict):
    def loss_sum(indices):
      logits = model.apply(
          {'params': state.params}, batch['input_ids'], batch['token_type_ids'],
          batch['attention_mask'], batch['mlm_positions'], indices,
          method=model.forward).logits
      mlm = losses.mlm_loss(logits, batch['mlm_ids'], batch['mlm_weights'])
      return jnp.sum(mlm.per_token * batch['mlm_weights'])
    out = dict(full=loss_sum(None), count=jnp.sum(batch['mlm_weights']))
    if config.method != 'baseline':
      k = token_drop.keep_count(batch['input_ids'].shape[1],
                                config.token_drop.keep_rate)
      out['drop'] = loss_sum(token_drop.select_kept(
          state.importance, batch['input_ids'], k, jax.random.PRNGKey(0)))
    return out

  return jax.jit(eval_step)

