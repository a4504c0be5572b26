"""Fine-tuning a pretrained model on a GLUE, SuperGLUE or built-in task.

python -m sctd_jax.evals.finetune --config configs/finetune.py --workdir OUT \
    --config.init=runs/tiny --config.task=tense

`init` is a pretraining workdir or a Hugging Face BERT folder. -1 in train.*
takes the task's value from the paper's Table 7 (sctd_jax/evals/tasks.py).
"""

from sctd_jax.evals import finetune


def get_config():
  return finetune.base_config()
