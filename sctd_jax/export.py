"""Export a run as a Hugging Face `BertForMaskedLM` folder.

  python -m sctd_jax.export --workdir DIR --out OUT [--step N]

OUT gets config.json, model.safetensors and the tokenizer files, checked
tensor by tensor against the layout HF builds from that config.json before
anything is written (`sctd_jax/hf/save.py`);
`transformers.AutoModelForMaskedLM.from_pretrained(OUT)` loads it with no
missing or unexpected keys.
"""

import time

from absl import flags

from sctd_jax import cli
from sctd_jax.hf import save

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir to export.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write the HF model into.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')


def main(argv):
  del argv
  started = time.perf_counter()
  cli.output_dir(_OUT.value, '--out')
  step = save.export(_WORKDIR.value, _OUT.value, _STEP.value)
  print(f'Exported {_WORKDIR.value} step {step} to {_OUT.value} in '
        f'{time.perf_counter() - started:.1f} s.')


if __name__ == '__main__':
  cli.run(main, required=['workdir', 'out'])
