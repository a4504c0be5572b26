"""Importing a PyTorch HF folder (pytorch_model.bin, no safetensors) and
fine-tuning from it: the weights as HF's own model computes with them, the
training subset that data.max_train_examples asks for."""

import json
import re

import numpy as np
import pytest
import torch
import transformers

from sctd_jax.data import synthetic
from sctd_jax.evals import finetune
from sctd_jax.evals import tasks
from sctd_jax.hf import load as hf_load
from test_finetune import _config

SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


@pytest.fixture(scope='module')
def torch_folder(tmp_path_factory):
  """A random HF BertForMaskedLM saved by PyTorch as pytorch_model.bin, with a
  word-level vocabulary of the synthetic grammar (no tokenizer fit)."""
  folder = tmp_path_factory.mktemp('torch_bert')
  words = sorted({w for s in synthetic.labelled_sentences(0, 2000)
                  for w in re.findall(r'\w+|[^\w\s]', s.text.lower())})
  tokenizer = transformers.BertTokenizerFast(
      vocab={w: i for i, w in enumerate(SPECIALS + words)})
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=64, max_position_embeddings=64, hidden_act='gelu_new')).eval()
  with torch.no_grad():   # non-zero biases and LayerNorm: a wrong mapping shows
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  # The legacy format, as older Hub checkpoints have it (transformers 5
  # itself writes only safetensors).
  torch.save(model.state_dict(), folder / 'pytorch_model.bin')
  model.config.save_pretrained(folder)
  tokenizer.save_pretrained(folder)
  assert (folder / 'pytorch_model.bin').exists()
  assert not (folder / 'model.safetensors').exists()
  return folder, model, tokenizer


def test_pytorch_model_bin_loads_with_hf_logits(torch_folder):
  folder, torch_model, tokenizer = torch_folder
  model, params, ours = hf_load.load_pretrained(str(folder))
  texts = [s.text for s in synthetic.labelled_sentences(5, 4)]
  enc = tokenizer(texts, ['the girls walk .'] * 4, padding=True, return_tensors='np')
  assert ours(texts, ['the girls walk .'] * 4, padding=True)['input_ids'] == \
      enc['input_ids'].tolist()
  logits = np.asarray(model.apply({'params': params}, enc['input_ids'],
                                  enc['token_type_ids'], enc['attention_mask']))
  with torch.no_grad():
    want = torch_model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
  real = enc['attention_mask'].astype(bool)
  np.testing.assert_allclose(logits[real], want[real], atol=1e-4)


def test_max_train_examples_keeps_the_first_examples(torch_folder):
  folder, _, tokenizer = torch_folder
  config = _config(str(folder), **{'data.max_train_examples': 7})
  (train, splits) = finetune.load_arrays(config, tasks.get('tense'), tokenizer)
  sentences = synthetic.labelled_sentences(tasks.BUILTIN_SEEDS['train'],
                                           tasks.BUILTIN_SIZES['train'])[:7]
  assert list(train[tasks.LABEL]) == [synthetic.TENSES.index(s.tense) for s in sentences]
  assert [split.name for split, _ in splits] == ['validation']


def test_finetune_from_an_hf_folder(torch_folder, tmp_path):
  folder, torch_model, _ = torch_folder
  results = finetune.finetune(_config(str(folder), task='tense', **{
      'train.num_steps': 2, 'data.max_train_examples': 64}), tmp_path)
  assert results['init'] == str(folder) and results['num_seeds'] == 1
  # The accuracy is that of the predictions it wrote, counted here.
  rows = [json.loads(line) for line in open(tmp_path / 'predictions.jsonl')]
  assert len(rows) == 500   # the built-in task's validation examples
  assert results['accuracy'] == sum(r['prediction'] == r['label'] for r in rows) / len(rows)
  assert json.load(open(tmp_path / 'eval_results.json')) == results
  assert json.load(open(tmp_path / 'config.json'))['data']['max_train_examples'] == 64
