"""Fine-tuning on GLUE-style tasks (paper section 4, Appendix A.2):

  python -m sctd_jax.evals.finetune --config configs/finetune.py --workdir OUT \
      --config.init=PRETRAINED --config.task=TASK

PRETRAINED is a pretraining workdir or a Hugging Face BERT folder. For each
seed the pretrained encoder gets a fresh classifier on its pooled [CLS] state
(one output and a squared error for STS-B's regression) and is trained with
AdamW, linear warmup and linear decay, at the task's Table 7 learning rate,
batch size and steps unless the config overrides them. The paper reports the
mean over 5 seeds; `num_seeds` runs seeds `seed, seed+1, ...`, and
OUT/eval_results.json holds each metric's mean over them, its population
standard deviation (`std`) and every seed's value (`per_seed`).
OUT/predictions.jsonl holds the first seed's validation predictions, and
OUT/config.json the config with the task's values filled in.
"""

import dataclasses
import json
import math
import os
import time

from absl import flags
from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import tqdm

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax.evals import metrics as glue_metrics
from sctd_jax.evals import tasks
from sctd_jax.hf import load as hf_load
from sctd_jax import metrics_log
from sctd_jax import models
from sctd_jax import step as step_lib

INPUT_KEYS = ('input_ids', 'token_type_ids', 'attention_mask')


def base_config() -> ml_collections.ConfigDict:
  """Every fine-tuning key (configs/finetune.py; the suites start from it)."""
  c = ml_collections.ConfigDict()
  c.init = ''  # Required: pretraining workdir or HF BERT folder.
  c.task = 'tense'  # A name in sctd_jax.tasks.TASKS.
  c.seed = 0
  c.num_seeds = 1  # Seeds seed, seed+1, ...; the paper averages 5.
  # Score the dev set after every epoch and report the best epoch's (fairseq's
  # recipe); False: the last step's.
  c.eval_every_epoch = False

  c.train = ml_collections.ConfigDict(dict(
      learning_rate=-1.0,  # -1: the task's.
      batch_size=-1,  # -1: the task's.
      num_epochs=-1,  # Give at most one of num_epochs and num_steps;
      num_steps=-1,  # with neither, the task's steps or epochs.
      warmup_ratio=0.06,  # Linear warmup over this share of the steps, then linear decay.
      weight_decay=0.01,
      adam_b1=0.9,
      adam_b2=0.999,
      adam_eps=1e-6,
      grad_clip_norm=0.0,  # 0 disables clipping.
      dropout_rate=0.1,  # Hidden and attention dropout while fine-tuning.
      log_every=50,
      eval_batch_size=128,
  ))

  c.data = ml_collections.ConfigDict(dict(
      # Local .csv, .tsv or .jsonl files with GLUE's column names, instead of
      # the task's own data; give both or neither.
      train_file='',
      validation_file='',
      # A Hub task's dataset from elsewhere: another Hub id, or a local copy
      # of its Hub repository (README.md and Parquet files, e.g. from
      # `huggingface-cli download nyu-mll/glue --repo-type dataset`), with
      # all its validation splits (MNLI's matched and mismatched). '': the Hub.
      dataset='',
      # Tokens per example (pairs truncated longest first). The paper uses
      # 256 or 512; 128 holds nearly all GLUE sentences and pairs but BoolQ's.
      max_length=128,
      max_train_examples=-1,  # The first N training examples; -1: all.
  ))
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad key."""
  check = config_lib.check
  check(bool(c.init) and config_lib.is_pretrained(c.init),
        'init', c.init, 'must be a pretraining workdir, a Hugging Face BERT '
        'folder (a directory with a config.json) or a Hub id')
  tasks.get(c.task)
  check(c.num_seeds >= 1, 'num_seeds', c.num_seeds, 'must be >= 1')
  t = c.train
  check(t.learning_rate == -1 or t.learning_rate > 0, 'train.learning_rate',
        t.learning_rate, "use -1 (the task's) or a positive number")
  for key in ('batch_size', 'num_epochs', 'num_steps'):
    check(t[key] == -1 or t[key] > 0, f'train.{key}', t[key],
          "use -1 (the task's) or a positive integer")
  check(t.num_epochs == -1 or t.num_steps == -1, 'train.num_epochs', t.num_epochs,
        f'give num_epochs or num_steps, not both (train.num_steps={t.num_steps})')
  check(0 <= t.warmup_ratio < 1, 'train.warmup_ratio', t.warmup_ratio, 'must be in [0, 1)')
  check(t.weight_decay >= 0, 'train.weight_decay', t.weight_decay, 'must be >= 0')
  check(t.grad_clip_norm >= 0, 'train.grad_clip_norm', t.grad_clip_norm,
        'must be >= 0 (0 disables clipping)')
  check(0 <= t.dropout_rate < 1, 'train.dropout_rate', t.dropout_rate, 'must be in [0, 1)')
  for key in ('log_every', 'eval_batch_size'):
    check(t[key] > 0, f'train.{key}', t[key], 'must be a positive integer')
  d = c.data
  check(not d.dataset or bool(tasks.get(c.task).hub), 'data.dataset', d.dataset,
        f'the built-in task {c.task} reads no dataset; leave it empty')
  check(not d.dataset or not (d.train_file or d.validation_file), 'data.dataset',
        d.dataset, 'give it or data.train_file/validation_file, not both')
  # [CLS] a [SEP] b [SEP] needs 5 tokens to hold a word of each text.
  check(d.max_length >= 5, 'data.max_length', d.max_length, 'must be >= 5')
  check(d.max_train_examples == -1 or d.max_train_examples > 0,
        'data.max_train_examples', d.max_train_examples,
        'use -1 (all) or a positive integer')


def resolve_train(c: ml_collections.ConfigDict, task: tasks.Task,
                  num_examples: int) -> ml_collections.ConfigDict:
  """`c.train` with the task's Table 7 values for -1, and the warmup in steps."""
  t = ml_collections.ConfigDict(c.train.to_dict())
  if t.learning_rate == -1:
    t.learning_rate = task.learning_rate
  if t.batch_size == -1:
    t.batch_size = task.batch_size
  t.num_steps = tasks.train_steps(task, num_examples, t.batch_size, t.num_steps,
                                  t.num_epochs)
  t.warmup_steps = int(round(t.warmup_ratio * t.num_steps))
  return t


def encode(tokenizer, task: tasks.Task, examples, max_length: int) -> dict:
  """Token ids, segment ids (pairs via the tokenizer's pair encoding), mask
  and labels as arrays padded to `max_length`, so every batch has one shape
  and the steps compile once; long texts are cut, the longer one first."""
  pairs = ([[list(examples[column]) for column in task.text_columns]]
           if task.pairs is None else task.pairs(examples[:]))
  encoded = [tokenizer(*texts, padding='max_length', truncation=True,
                       max_length=max_length, return_token_type_ids=True,
                       return_tensors='np') for texts in pairs]
  # A multiple-choice example is [choices, max_length].
  join = (lambda xs: np.stack(xs, 1)) if task.multiple_choice else (lambda xs: xs[0])
  arrays = {key: join([e[key] for e in encoded]).astype(np.int32) for key in INPUT_KEYS}
  if task.group is not None:
    _, arrays['group'] = np.unique([task.group(e) for e in examples],
                                   return_inverse=True)
  label_dtype = np.float32 if task.num_labels == 1 else np.int32
  arrays[tasks.LABEL] = np.asarray(list(examples[tasks.LABEL]), label_dtype)
  return arrays


class BertForMultipleChoice(nn.Module):
  """HF's BertForMultipleChoice: each of the `num_labels` (premise,
  alternative) pairs [B, C, S] gets one score from its pooled [CLS] state;
  the scores are the logits over the alternatives."""
  cfg: models.BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic=True):
    flat = lambda x: x.reshape(-1, x.shape[-1])
    _, _, pooled = models.BertModel(self.cfg, name='bert')(
        flat(input_ids), flat(token_type_ids), flat(attention_mask), None, deterministic)
    pooled = nn.Dropout(self.cfg.dropout_rate)(pooled, deterministic=deterministic)
    score = nn.Dense(1, kernel_init=nn.initializers.normal(self.cfg.initializer_range),
                     name='classifier')(pooled)
    return score.reshape(input_ids.shape[:-1]).astype(jnp.float32)


def task_loss(logits, labels, num_labels: int):
  """Mean squared error for regression (one output), else cross-entropy."""
  if num_labels == 1:
    return jnp.mean(jnp.square(logits[:, 0] - labels))
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(model: models.BertForSequenceClassification):
  """The jitted `train_step(state, batch, key) -> (state, loss)`; dropout's
  key is `key` folded with the step, so no host RNG runs per step."""
  def train_step(state, batch, key):
    def loss_fn(params):
      logits = model.apply({'params': params}, *(batch[k] for k in INPUT_KEYS),
                           deterministic=False,
                           rngs={'dropout': jax.random.fold_in(key, state.step)})
      return task_loss(logits, batch[tasks.LABEL], model.num_labels)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
  return jax.jit(train_step, donate_argnums=0)


def make_predict_step(model: models.BertForSequenceClassification):
  return jax.jit(lambda params, batch: model.apply(
      {'params': params}, *(batch[k] for k in INPUT_KEYS)))


def train_batches(arrays: dict, batch_size: int, seed: int):
  """Endless full batches: each epoch a new permutation of the examples,
  its remainder carried into the next, so every batch has the one shape."""
  rng = np.random.default_rng(seed)
  order = np.empty(0, np.int64)
  while True:
    while len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(len(arrays[tasks.LABEL]))])
    take, order = order[:batch_size], order[batch_size:]
    yield {key: value[take] for key, value in arrays.items()}


def predict(predict_step, params, arrays: dict, batch_size: int,
            num_labels: int) -> np.ndarray:
  """Class indices, or the regression outputs; the last batch is padded with
  empty rows to the one compiled shape and their outputs dropped."""
  n = len(arrays[tasks.LABEL])
  outputs = []
  for start in range(0, n, batch_size):
    pad = lambda x: np.pad(x, [(0, max(0, start + batch_size - n))] +
                           [(0, 0)] * (x.ndim - 1))
    batch = {key: pad(arrays[key][start:start + batch_size]) for key in INPUT_KEYS}
    outputs.append(np.asarray(predict_step(params, batch)))
  logits = np.concatenate(outputs)[:n]
  return logits[:, 0] if num_labels == 1 else logits.argmax(-1)


def init_params(model: models.BertForSequenceClassification, bert_params, key):
  """The pretrained encoder (host arrays, put on the device afresh for each
  seed: the train step donates its state) and a fresh classifier from `key`.
  All on the default device, whatever sharding the checkpoint was restored
  with, so every step sees the same input layout and compiles once."""
  ids = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(model.init(key, ids, ids, ids)['params'])
  return jax.device_put({**params, 'bert': bert_params})


def train(train_step, state, batches, key, t, desc: str):
  """`t.num_steps` steps showing the mean loss of the last `t.log_every`:
  on a terminal in a progress bar; in a log file (a scheduler's), where a
  redrawn bar would be one endless line, as a log line with the ETA."""
  losses = []
  started = time.perf_counter()
  with tqdm.tqdm(total=t.num_steps, desc=desc, unit='step', dynamic_ncols=True,
                 mininterval=1.0, disable=None) as bar:   # None: off unless a terminal
    for done in range(1, t.num_steps + 1):
      state, loss = train_step(state, next(batches), key)
      losses.append(loss)
      bar.update(1)
      if done % t.log_every == 0 or done == t.num_steps:
        mean = float(np.mean(jax.device_get(losses)))
        losses = []
        if not math.isfinite(mean):
          raise metrics_log.NonFiniteLoss(f'{desc}: non-finite loss {mean} at step {done}; '
                                   'lower train.learning_rate.')
        if bar.disable:
          eta = (time.perf_counter() - started) * (t.num_steps - done) / done
          logging.info('%s: step %d/%d loss %.4f  ETA %s', desc, done, t.num_steps, mean,
                       metrics_log.hms(eta))
        else:
          bar.set_postfix(loss=f'{mean:.4f}', refresh=False)
  return state


def primary_metric(task: tasks.Task) -> str:
  """The score the paper's tables give for `task`: its first metric on its
  first validation split (MNLI: accuracy_m)."""
  return task.metrics[0] + task.validation_splits[0][1]


def train_and_score(train_step, predict_step, state, batches, key, t, splits,
                    task: tasks.Task, desc: str, steps_per_epoch: int = 0):
  """Trains `t.num_steps` steps and returns (scores, predictions) on the
  dev splits at the end or, with `steps_per_epoch`, after every epoch, the
  best epoch's by the task's primary metric (fairseq's recipe). The chunks
  run the same steps as one call: dropout keys follow the state's step."""
  best, done = None, 0
  while done < t.num_steps:
    chunk = min(steps_per_epoch or t.num_steps, t.num_steps - done)
    state = train(train_step, state, batches, key,
                  ml_collections.ConfigDict({**t.to_dict(), 'num_steps': chunk}), desc)
    done += chunk
    scores, rows = evaluate(predict_step, state.params, splits, task,
                            t.eval_batch_size)
    if steps_per_epoch:
      logging.info('%s: epoch %d, step %d of %d: %s', desc, math.ceil(done / steps_per_epoch),
                   done, t.num_steps, format_scores(scores))
    if best is None or scores[primary_metric(task)] > best[0][primary_metric(task)]:
      best = scores, rows
  return best


def format_scores(scores: dict[str, float]) -> str:
  return ', '.join(f'{name} {value:.4f}' for name, value in scores.items())


def evaluate(predict_step, params, splits, task: tasks.Task, batch_size: int):
  """The task's metrics on every validation split (named with the split's
  suffix), and a predictions.jsonl row per example."""
  scores, rows = {}, []
  for split, arrays in splits:
    predictions = predict(predict_step, params, arrays, batch_size, task.num_labels)
    labels = arrays[tasks.LABEL]
    scores.update(glue_metrics.compute(task.metrics, predictions, labels,
                                       split.suffix, arrays.get('group')))
    rows += [{'split': split.name, 'index': i, 'prediction': p.item(), 'label': y.item()}
             for i, (p, y) in enumerate(zip(predictions, labels))]
  return scores, rows


def summarize(name: str, init: str, runs: list[dict], **extra) -> dict:
  """eval_results.json: each metric's mean over seeds at the top level, its
  population standard deviation under `std`, the seeds' values under `per_seed`."""
  per_seed = {metric: [run[metric] for run in runs] for metric in runs[0]}
  return {'task': name, 'init': init, **extra, 'num_seeds': len(runs),
          **{metric: float(np.mean(values)) for metric, values in per_seed.items()},
          'std': {metric: float(np.std(values)) for metric, values in per_seed.items()},
          'per_seed': per_seed}


def encoder_config(cfg: models.BertConfig, rate: float) -> models.BertConfig:
  """The pretrained encoder's config for fine-tuning: dropout `rate`
  everywhere, its masks drawn with JAX's threefry2x32 whatever pretraining
  drew with (fine-tuning has no train.dropout_prng; its results so far were
  drawn with threefry2x32)."""
  return dataclasses.replace(cfg, dropout_rate=rate, attention_dropout_rate=rate,
                             dropout_prng='threefry2x32')


def make_optimizer(t) -> optax.GradientTransformation:
  """Fine-tuning's AdamW: linear warmup over `t.warmup_steps`, then linear
  decay to 0 at `t.num_steps`."""
  return step_lib.make_optimizer(step_lib.learning_rate_schedule(
      t.learning_rate, t.warmup_steps, t.num_steps), t)


def epochs_config(learning_rate: float, batch_size: int, num_epochs: float,
                  num_examples: int) -> ml_collections.ConfigDict:
  """The keys `make_optimizer` and `train` read, for `num_epochs` over
  `num_examples` (SQuAD's windows, NER's shots): AdamW, 10% warmup, linear
  decay to 0."""
  num_steps = max(1, round(num_epochs * num_examples / batch_size))
  return ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, num_steps=num_steps,
      warmup_steps=int(round(0.1 * num_steps)),
      weight_decay=0.01, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6,
      grad_clip_norm=0.0, log_every=50, batch_size=batch_size))


def load_arrays(config, task: tasks.Task, tokenizer):
  """Encoded training examples (the first `data.max_train_examples`) and
  [(split, encoded examples)] of every validation split."""
  d = config.data
  data = tasks.load(task, d.train_file, d.validation_file, d.dataset)
  train_examples = data.train
  if d.max_train_examples != -1:
    train_examples = train_examples.select(
        range(min(d.max_train_examples, len(train_examples))))
  splits = [(split, encode(tokenizer, task, split.examples, d.max_length))
            for split in data.validation]
  return encode(tokenizer, task, train_examples, d.max_length), splits


def finetune(config, workdir: str, flag: str = '--workdir') -> dict:
  """Fine-tunes `config.init` on `config.task` for `config.num_seeds` seeds,
  writes eval_results.json, predictions.jsonl and config.json into `workdir`
  (given by command-line `flag`) and returns the eval_results dict."""
  validate(config)
  cli.output_dir(workdir, flag, cli.FINETUNING)
  task = tasks.get(config.task)
  mlm, pretrained_params, tokenizer = hf_load.load_pretrained(config.init)
  if config.data.max_length > mlm.cfg.max_position_embeddings:
    raise config_lib.ConfigError(
        f'config key data.max_length={config.data.max_length} is invalid: the '
        f'model at {config.init} has {mlm.cfg.max_position_embeddings} positions.')
  train_arrays, splits = load_arrays(config, task, tokenizer)
  num_examples = len(train_arrays[tasks.LABEL])
  t = resolve_train(config, task, num_examples)
  metrics_log.write_json(os.path.join(workdir, 'config.json'),
                       {**config.to_dict(), 'train': t.to_dict()})
  logging.info('%s: %d training examples, %d steps of %d at lr %g, from %s.',
               task.name, num_examples, t.num_steps, t.batch_size, t.learning_rate,
               config.init)

  rate = config.train.dropout_rate
  cfg = encoder_config(mlm.cfg, rate)
  model = (BertForMultipleChoice if task.multiple_choice else
           models.BertForSequenceClassification)(cfg, task.num_labels)
  optimizer = make_optimizer(t)
  # Built once: every seed runs the same two compiled programs.
  train_step, predict_step = make_train_step(model), make_predict_step(model)
  bert_params = jax.device_get(pretrained_params['bert'])
  runs = []
  for seed in range(config.seed, config.seed + config.num_seeds):
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    state = train_state.TrainState.create(
        apply_fn=model.apply, tx=optimizer,
        params=init_params(model, bert_params, init_key))
    # An array step from the start, so the first call compiles the only program.
    state = state.replace(step=jnp.zeros((), jnp.int32))
    epoch = math.ceil(num_examples / t.batch_size) if config.eval_every_epoch else 0
    scores, rows = train_and_score(
        train_step, predict_step, state,
        train_batches(train_arrays, t.batch_size, seed), dropout_key, t, splits,
        task, f'{task.name} seed {seed}', epoch)
    logging.info('%s seed %d: %s', task.name, seed, format_scores(scores))
    if not runs:
      with open(os.path.join(workdir, 'predictions.jsonl'), 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    runs.append(scores)

  results = summarize(task.name, config.init, runs)
  metrics_log.write_json(os.path.join(workdir, 'eval_results.json'), results)
  logging.info('%s over %d seeds: %s', task.name, len(runs), ', '.join(
      f'{name} {results[name]:.4f} ± {results["std"][name]:.4f}' for name in runs[0]))
  return results


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      'config', None, 'Config file with get_config(), e.g. configs/finetune.py.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for the results.')


def main(argv):
  del argv
  cli.use_compilation_cache()
  finetune(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['config', 'workdir'])
