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

def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Training workdir to export.')
  flags.DEFINE_string('out', None, 'Folder to write the HF model into.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')


def main(argv):
  del argv
  args = flags.FLAGS
  started = time.perf_counter()
  step = save.export(args.workdir, args.out, args.step)
  print(f'Exported {args.workdir} step {step} to {args.out} in '
        f'{time.perf_counter() - started:.1f} s.')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['workdir', 'out'])
