"""Fine-tuning a pretrained model on a GLUE, SuperGLUE or built-in task.

python -m sctd_jax.evals.finetune --config configs/finetune.py --workdir OUT \
    --config.init=runs/tiny --config.task=tense

`init` is a pretraining workdir or a Hugging Face BERT folder. -1 in train.*
takes the task's value from the paper's Table 7 (sctd_jax/evals/tasks.py).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.init = ''  # Required: pretraining workdir or HF BERT folder.
  c.task = 'tense'  # A name in sctd_jax.evals.tasks.TASKS.
  c.seed = 0
  c.num_seeds = 1  # Seeds seed, seed+1, ...; the paper averages 5.

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
      # Tokens per example (pairs truncated longest first). The paper uses
      # 256 or 512; 128 holds nearly all GLUE sentences and pairs but BoolQ's.
      max_length=128,
      max_train_examples=-1,  # The first N training examples; -1: all.
  ))
  return c
