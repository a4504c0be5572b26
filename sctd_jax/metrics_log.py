"""What a run tells its user: metrics.jsonl, TensorBoard, log lines, progress bar."""

import json
import math
import os
import shlex
import sys

from absl import logging
import numpy as np
import tqdm

from sctd_jax import cli
from sctd_jax import losses
from sctd_jax import paths


def summarize(step: int, per_step: list[dict], seconds: float,
              tokens_per_step: int) -> dict:
  """One metrics.jsonl row for the steps since the last row.

  Terms every step has are averaged; Eq. 4's optional terms are averaged over
  the steps that have them and are null when none did; `sctd_step` counts the
  semantic-consistent steps in the interval (0/1 with log_every=1);
  `skipped_steps` counts the steps `train.on_nonfinite='skip'` left out,
  which no other term averages (all null when every step was skipped);
  `step_time_s` is wall time per step measured after the results were ready.
  """
  stacked = {k: np.asarray([m[k] for m in per_step], np.float64) for k in per_step[0]}
  kept = stacked['skipped'] == 0
  mean = lambda key: float(stacked[key][kept].mean()) if kept.any() else None
  row = dict(step=step, loss=mean('loss'), grad_norm=mean('grad_norm'),
             learning_rate=float(stacked['learning_rate'][-1]),
             sctd_step=int(stacked['sctd_step'].sum()),
             skipped_steps=int((~kept).sum()))
  for key in losses.OPTIONAL_METRICS:
    present = stacked[key][kept & ~np.isnan(stacked[key])]
    row[key] = float(present.mean()) if present.size else None
  row['step_time_s'] = seconds / len(per_step)
  row['tokens_per_s'] = tokens_per_step / row['step_time_s']
  return row


def write_json(path: str, value) -> None:
  """`value` as indented JSON at `path`, its folder made if needed."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(value, f, indent=2)


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics.jsonl rows after `step`: a resumed run redoes those steps."""
  path = paths.resolve(workdir) / 'metrics.jsonl'
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = [line for line in lines if _step_of(line) <= step]
  if len(keep) < len(lines):
    logging.info('Resuming at step %d: dropped %d metrics rows of later steps.',
                 step, len(lines) - len(keep))
    path.write_text(''.join(keep))


class NonFiniteLoss(cli.UserError):
  """The loss became NaN or infinite; the checkpoints predate it."""


class Reporter:
  """Appends rows to `metrics.jsonl` and mirrors them to TensorBoard and one
  progress display: on a terminal a tqdm bar (step, loss, tokens/s, ETA) with
  evaluations printed above it; otherwise (a log file, a scheduler) a plain
  log line per row and per evaluation."""

  def __init__(self, workdir: str, first_step: int, num_steps: int,
               enabled: bool = True, unigram_entropy: float | None = None,
               terminal: bool | None = None):
    # Only process 0 writes; every process checks the (replicated) loss.
    self.enabled = enabled
    if not enabled:
      return
    self.jsonl = paths.resolve(workdir) / 'metrics.jsonl'
    # Imported here: tensorboardX imports torch when it is installed, seconds
    # that a command failing on its config should not wait for.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self.tb = tensorboardX.SummaryWriter(str(paths.resolve(workdir) / 'tensorboard'))
    self.first_step = self.last_step = first_step
    self.num_steps = num_steps
    self.unigram_entropy = unigram_entropy
    self.step_seconds = 0.0   # Training time of the steps logged this run.
    self.last_eval = None
    if terminal is None:
      terminal = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=num_steps, initial=first_step, unit='step',
                         dynamic_ncols=True, mininterval=1.0) if terminal else None

  def advance(self):
    if self.enabled and self.bar:
      self.bar.update(1)

  def write(self, row: dict):
    if not math.isfinite(row.get('loss') or 0.0):
      raise NonFiniteLoss(
          f'Non-finite loss {row["loss"]} at step {row["step"]}. Lower '
          'train.learning_rate, set train.grad_clip_norm, or skip such steps '
          "with train.on_nonfinite='skip'; the checkpoints in the workdir are "
          'from before this step.')
    if not self.enabled:
      return
    paths.append_text(self.jsonl, json.dumps(row) + '\n')
    for key, value in row.items():
      if key != 'step' and value is not None:
        self.tb.add_scalar(key, value, row['step'])
    self.step_seconds += row['step_time_s'] * (row['step'] - self.last_step)
    self.last_step = row['step']
    shown = row.get('loss') is not None  # None: every step of the row was skipped.
    if shown and self.bar:
      self.bar.set_postfix(loss=f'{row["loss"]:.3f}',
                           tok_s=f'{row["tokens_per_s"]:.0f}', refresh=False)
    elif shown:
      remaining = (self.num_steps - row['step']) * row['step_time_s']
      logging.info('step %d/%d loss %.4f  %.0f tokens/s  ETA %s', row['step'],
                   self.num_steps, row['loss'], row['tokens_per_s'],
                   hms(remaining))
    if 'val_mlm_full' in row:
      self.last_eval = row
      line = f'step {row["step"]}: {_validation(row, self.unigram_entropy)}'
      if self.bar:
        self.bar.write(line, file=sys.stderr)
      else:
        logging.info('%s', line)

  def mean_tokens_per_s(self, tokens_per_step: int) -> float | None:
    """Over the steps this run logged, evaluations and saves excluded."""
    steps = self.last_step - self.first_step
    return tokens_per_step * steps / self.step_seconds if self.step_seconds else None

  def close(self):
    if not self.enabled:
      return
    if self.bar:
      self.bar.close()
    self.tb.close()


class WandbMissing(cli.UserError):
  """wandb.project is set but the wandb package is not installed."""


def start_wandb(config, workdir: str):
  """This workdir's Weights & Biases run, or None when wandb.project is ''.

  The run id is kept in `workdir/wandb_run_id`, so a requeued or resumed job
  logs to the same run. Call on process 0 only. W&B keeps a step's first
  values: rows a resumed run redoes (after its checkpoint) stay as first logged.
  """
  if not config.wandb.project:
    return None
  try:
    import wandb  # pylint: disable=g-import-not-at-top  (an optional extra)
  except ImportError as e:
    raise WandbMissing('config key wandb.project is set but wandb is not '
                       "installed: pip install -e '.[wandb]'.") from e
  id_file = paths.resolve(workdir) / 'wandb_run_id'
  local = None if paths.is_remote(workdir) else str(paths.resolve(workdir))
  run = wandb.init(project=config.wandb.project, entity=config.wandb.entity or None,
                   name=config.wandb.name or paths.resolve(workdir).name,
                   id=id_file.read_text().strip() if id_file.exists() else None,
                   resume='allow', dir=local, config=config.to_dict())
  id_file.write_text(run.id)
  return run


def wandb_log(run, row: dict) -> None:
  """One metrics.jsonl row as W&B values at its step (null terms left out)."""
  run.log({k: v for k, v in row.items() if k != 'step' and v is not None},
          step=row['step'])


def _validation(row: dict, unigram_entropy: float | None) -> str:
  """'validation MLM loss: full 4.580, dropped 4.601 nats; unigram entropy ...'."""
  text = f'validation MLM loss: full {row["val_mlm_full"]:.3f}'
  if 'val_mlm_drop' in row:
    text += f', dropped {row["val_mlm_drop"]:.3f}'
  text += ' nats'
  if unigram_entropy is not None:
    text += (f'; unigram entropy {unigram_entropy:.3f} (the loss of a model '
             'that ignores context)')
  return text


def next_commands(workdir: str) -> list[tuple[str, str]]:
  """(what, command) of the steps after pretraining, `workdir` filled in; the
  same commands as docs/quickstart.md."""
  q = shlex.quote
  hf = os.path.join(workdir, 'hf')
  fill = ("from transformers import pipeline; "
          f"print(pipeline('fill-mask', model={hf!r})"
          "('the farmers will [MASK] the horses in the barn.'))")
  return [
      ('export to Hugging Face', f'python -m sctd_jax.export --workdir {q(workdir)} '
       f'--out {q(hf)}'),
      ('fill-mask in transformers (needs PyTorch: pip install torch)',
       f'python -c "{fill}"'),
      ('fine-tune', 'python -m sctd_jax.evals.finetune --config configs/finetune.py '
       f'--workdir {q(os.path.join(workdir, "finetune", "tense"))} '
       f'--config.init={q(workdir)} --config.task=tense'),
      ('probe the layers', f'python -m sctd_jax.evals.probe --init {q(workdir)} '
       f'--out {q(os.path.join(workdir, "probe"))}'),
      ('report', f'python -m sctd_jax.evals.report {q(workdir)} '
       f'--out {q(os.path.join(workdir, "report"))}'),
  ]


def run_summary(workdir: str, step: int, num_steps: int, first_step: int,
                wall_s: float, compile_s: float, last_eval: dict | None,
                unigram_entropy: float | None, tokens_per_s: float | None,
                checkpoint: str | None, stopped_by: str | None = None,
                resume: str | None = None, eval_every: int | None = None) -> str:
  """What a finished or stopped run produced and what to run next."""
  if stopped_by:
    head = f'Stopped by {stopped_by} after step {step} of {num_steps}'
  else:
    head = f'Finished {step} of {num_steps} steps'
  done_here = f'steps {first_step + 1}-{step}' if step > first_step else 'no steps'
  speed = f'; {tokens_per_s:,.0f} tokens/s on average' if tokens_per_s else ''
  lines = [f'{head} in {hms(wall_s)} ({done_here} in this run, compile '
           f'{compile_s:.1f} s{speed}).']
  if last_eval:
    lines.append(f'At step {last_eval["step"]}: '
                 f'{_validation(last_eval, unigram_entropy)}.')
  else:
    lines.append(f'No evaluation yet (every {eval_every} steps).')
  lines.append(f'Checkpoint: {checkpoint}' if checkpoint else 'No checkpoint saved.')
  if stopped_by:
    lines.append('Resume: ' + (resume or 'rerun the same command') +
                 ' (continues from the checkpoint)')
  else:
    lines.append('Next:')
    lines += [f'  # {what}\n  {command}' for what, command in next_commands(workdir)]
  return '\n'.join(lines)


def hms(seconds: float) -> str:
  """H:MM:SS."""
  minutes, secs = divmod(int(seconds), 60)
  return f'{minutes // 60}:{minutes % 60:02d}:{secs:02d}'


def _step_of(line: str) -> float:
  """A row's step; a line cut short by a kill counts as after every step."""
  try:
    return json.loads(line)['step']
  except (json.JSONDecodeError, KeyError):
    return float('inf')
