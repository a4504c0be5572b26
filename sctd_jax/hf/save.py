"""A run as a Hugging Face `BertForMaskedLM` folder (`python -m sctd_jax.export`).

The folder gets config.json, model.safetensors (PyTorch layout, written with NumPy,
so exporting needs no torch) and the tokenizer files;
`transformers.AutoModelForMaskedLM.from_pretrained(OUT)` loads it with no
missing or unexpected keys. Every tensor is checked against the names and
shapes HF builds from that config.json before anything is written.
"""

import os

import safetensors.numpy

from sctd_jax import cli

from sctd_jax.hf import format as hf_format
from sctd_jax.hf import load as hf_load
from sctd_jax import models

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
  cli.refuse_other_kind(out, '--out', cli.HF_MODEL)  # Before the checkpoint loads.
  run = hf_load.load_workdir(workdir, step)
  cli.output_dir(out, '--out')
  write_hf_folder(out, run.model.cfg, run.params, run.tokenizer)
  return run.step
