"""What a run tells its user: metrics.jsonl, TensorBoard, log lines, progress bar."""

import json
import math
import os

from absl import logging
import numpy as np
import tensorboardX
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
  """Appends rows to `metrics.jsonl`, mirrors them to TensorBoard and the log,
  and drives a progress bar with step, loss, tokens/s and ETA."""

  def __init__(self, workdir: str, first_step: int, num_steps: int,
               enabled: bool = True):
    # Only process 0 writes; every process checks the (replicated) loss.
    self.enabled = enabled
    if not enabled:
      return
    self.jsonl = paths.resolve(workdir) / 'metrics.jsonl'
    self.tb = tensorboardX.SummaryWriter(str(paths.resolve(workdir) / 'tensorboard'))
    self.num_steps = num_steps
    self.bar = tqdm.tqdm(total=num_steps, initial=first_step, unit='step',
                         dynamic_ncols=True, mininterval=1.0)

  def advance(self):
    if self.enabled:
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
    if row.get('loss') is not None:
      self.bar.set_postfix(loss=f'{row["loss"]:.3f}',
                           tok_s=f'{row["tokens_per_s"]:.0f}', refresh=False)
      remaining = (self.num_steps - row['step']) * row['step_time_s']
      logging.info('step %d/%d loss %.4f  %.0f tokens/s  ETA %s', row['step'],
                   self.num_steps, row['loss'], row['tokens_per_s'],
                   _hms(remaining))

  def close(self):
    if not self.enabled:
      return
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


def _hms(seconds: float) -> str:
  minutes, secs = divmod(int(seconds), 60)
  return f'{minutes // 60}:{minutes % 60:02d}:{secs:02d}'


def _step_of(line: str) -> float:
  """A row's step; a line cut short by a kill counts as after every step."""
  try:
    return json.loads(line)['step']
  except (json.JSONDecodeError, KeyError):
    return float('inf')
