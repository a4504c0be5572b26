"""MLM loss and the SCTD objective (paper Eq. 1-4, docs/design.md section 1)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Terms of Eq. 4 that only some steps have; NaN in the step, null in logs.
OPTIONAL_METRICS = ('mlm_drop', 'mlm_full', 'kl_global', 'kl_local')


class MLMLoss(NamedTuple):
  mean: jax.Array          # Scalar: summed loss / number of real targets.
  per_token: jax.Array     # [B, P] cross-entropy at every prediction slot.


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array,
             num_targets: jax.Array | None = None) -> MLMLoss:
  """Eq. 1 over the weighted prediction slots, divided by `num_targets` (by
  default this batch's; a micro-batch passes its whole batch's). A batch with
  no target gives 0, not NaN."""
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  w = weights.astype(jnp.float32)
  if num_targets is None:
    num_targets = jnp.sum(w)
  return MLMLoss(jnp.sum(per_token * w) / jnp.maximum(num_targets, 1.0), per_token)


def cls_kl(teacher: jax.Array, student: jax.Array) -> jax.Array:
  """Per-example KL(p(teacher) || p(student)), p = softmax over the hidden
  dim of the [CLS] vector (Eq. 2-3). Shapes [B, d] -> [B]."""
  log_p = jax.nn.log_softmax(teacher.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(student.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


class SCTDTerms(NamedTuple):
  loss: jax.Array
  mlm_drop: jax.Array
  mlm_full: jax.Array
  kl_global: jax.Array
  kl_local: jax.Array


def per_input_token(mean: jax.Array, num_targets: jax.Array,
                    num_inputs: jax.Array) -> jax.Array:
  """A loss averaged over the `num_targets` prediction targets, re-normalised
  as the authors' released criterion does: summed over targets, divided by
  the number of input (non-pad) tokens `num_inputs` (fairseq's `ntokens`)."""
  return mean * jnp.maximum(num_targets, 1.0) / jnp.maximum(num_inputs, 1.0)


def sctd_objective(mlm_drop: jax.Array, mlm_full: jax.Array,
                   cls_full: jax.Array, cls_drop: jax.Array,
                   num_targets: jax.Array, sctd_config,
                   num_examples: jax.Array | None = None,
                   num_inputs: jax.Array | None = None) -> SCTDTerms:
  """The loss of a semantic-consistent step.

  `objective='paper'` is Eq. 4: L = 1/2 L*_MLM + 1/2 L_MLM + lam (L_SCg + L_SCl).
  `objective='released'` is the authors' fairseq criterion:
  L = (sum L*_MLM + lam (sum KL_g + sum KL_l)) / num_inputs, sums over the
  masked tokens and the examples, `num_inputs` the batch's non-pad input
  tokens; it has no L_MLM term (their "full" loss is computed from the
  dropped output) and reads neither `use_mlm_full` nor `kl_normalizer`.

  `mlm_drop` / `mlm_full` are means over the `num_targets` prediction
  targets. `cls_full` / `cls_drop` are the per-layer [CLS] states
  [num_layers, B, d] of the full (teacher) and dropped (student) forwards;
  L_SCg uses the last layer (X_l), L_SCl the penultimate (X_{l-1}). The
  switches remove exactly their term; under 'paper', `kl_normalizer='batch'`
  averages the KL over the examples (`num_examples`, default this batch's)
  and `'masked_tokens'` divides its sum by the number of masked tokens.
  """
  if sctd_config.stop_grad_teacher:
    cls_full = jax.lax.stop_gradient(cls_full)
  released = sctd_config.objective == 'released'
  if num_examples is None:
    num_examples = cls_full.shape[1]
  if released:
    denominator = num_inputs
  elif sctd_config.kl_normalizer == 'batch':
    denominator = num_examples
  else:
    denominator = num_targets
  reduce = lambda kl: jnp.sum(kl) / jnp.maximum(denominator, 1.0)
  kl_global = reduce(cls_kl(cls_full[-1], cls_drop[-1]))
  kl_local = reduce(cls_kl(cls_full[-2], cls_drop[-2]))
  if released:
    loss = per_input_token(mlm_drop, num_targets, num_inputs)
  else:
    loss = 0.5 * mlm_drop
    if sctd_config.use_mlm_full:
      loss += 0.5 * mlm_full
  if sctd_config.use_kl_global:
    loss += sctd_config.lam * kl_global
  if sctd_config.use_kl_local:
    loss += sctd_config.lam * kl_local
  return SCTDTerms(loss, mlm_drop, mlm_full, kl_global, kl_local)


def masked_per_sequence(seq_len: int, mlm_probability: float,
                        max_predictions: int) -> int:
  """Prediction targets in a full sequence of `seq_len` tokens: the Masker's
  round(p * maskable), maskable = all but [CLS] and [SEP], capped."""
  return min(max_predictions, round(mlm_probability * (seq_len - 2)))


def effective_lambda(config) -> float:
  """The weight that one unit of per-example KL (KL_g or KL_l averaged over
  the examples) gets against one unit of the per-target mean MLM loss, for
  full sequences: `lam` under kl_normalizer 'batch', lam / m under
  'masked_tokens' and under the released objective (m = targets per
  sequence), which differ by a factor m (about 76 at seq 512)."""
  s, d = config.sctd, config.data
  if s.objective == 'paper' and s.kl_normalizer == 'batch':
    return s.lam
  return s.lam / max(1, masked_per_sequence(d.seq_len, d.mlm_probability,
                                            d.max_predictions))
