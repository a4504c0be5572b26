"""Export a run as a Hugging Face `BertForMaskedLM` folder (DESIGN.md section 3).

python -m sctd_jax.export --workdir DIR --out OUT [--step N]

OUT gets config.json, model.safetensors (PyTorch layout, written with NumPy,
so exporting needs no torch) and the tokenizer files;
`transformers.AutoModelForMaskedLM.from_pretrained(OUT)` loads it with no
missing or unexpected keys. Every tensor is checked against the names and
shapes HF builds from that config.json before anything is written.
"""

import os
import time

from absl import app
from absl import flags
import safetensors.numpy

from sctd_jax import checkpointing
from sctd_jax import hf_format
from sctd_jax import models
from sctd_jax import pretrained
from sctd_jax import reporting

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir to export.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write the HF model into.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default: the newest.')


def hf_tensors(params, hf_config) -> dict:
  """The tensors of HF's BertForMaskedLM file: our params under HF names,
  without the tied decoder copies (HF re-ties them on load) and without the
  pooler, which BertForMaskedLM lacks (transformers 5 reports it as an
  unexpected key) and which pretraining never trains (no loss reads it);
  BertModel and the classifiers initialise one afresh and say so."""
  tensors = hf_format.to_hf_state_dict(params, tied=False)
  for name in hf_format.POOLER:
    del tensors[name]
  hf_format.check_tensors(tensors, hf_format.hf_bert_shapes(hf_config))
  return tensors


def write_hf_folder(out: str, cfg: models.BertConfig, params, tokenizer) -> None:
  """Writes config.json, model.safetensors and the tokenizer files into `out`."""
  hf_config = hf_format.to_hf_config(cfg)
  hf_config.architectures = ['BertForMaskedLM']
  hf_config.pad_token_id = tokenizer.pad_token_id
  tensors = hf_tensors(params, hf_config)  # Checked before anything is written.
  os.makedirs(out, exist_ok=True)
  # 'pt': the tensors are in PyTorch's layout; transformers checks this tag.
  safetensors.numpy.save_file(tensors, os.path.join(out, 'model.safetensors'),
                              metadata={'format': 'pt'})
  hf_config.save_pretrained(out)
  tokenizer.save_pretrained(out)


def export(workdir: str, out: str, step: int | None = None) -> int:
  """Exports checkpoint `step` (default: the newest) of `workdir` to `out`;
  returns the step exported."""
  run = pretrained.load_workdir(workdir, step)
  write_hf_folder(out, run.model.cfg, run.params, run.tokenizer)
  return run.step


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  reporting.quiet_library_logs()
  started = time.perf_counter()
  try:
    step = export(_WORKDIR.value, _OUT.value, _STEP.value)
  except (hf_format.FormatError, checkpointing.CheckpointMismatch) as e:
    raise SystemExit(f'error: {e}') from None
  print(f'Exported {_WORKDIR.value} step {step} to {_OUT.value} in '
        f'{time.perf_counter() - started:.1f} s.')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main)
