"""Any Hugging Face BERT in: folders written by transformers itself (BertModel,
BertForPreTraining, BertForMaskedLM; safetensors or pytorch_model.bin; legacy
gamma/beta names), compared with HF's PyTorch hidden states."""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from sctd_jax import config as config_lib
from sctd_jax.hf import format as hf_format
from sctd_jax.hf import load as hf_load
from conftest import offline_env
from test_train import ROOT

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + [f'w{i}' for i in range(59)]
HEAD = {'cls.predictions.bias', 'cls.predictions.transform.dense.weight',
        'cls.predictions.transform.dense.bias',
        'cls.predictions.transform.LayerNorm.weight',
        'cls.predictions.transform.LayerNorm.bias'}


def _hf_config():
  return transformers.BertConfig(
      vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3,
      num_attention_heads=4, intermediate_size=48, max_position_embeddings=40)


def _save(folder, cls_name, fmt, legacy=False):
  """A random HF model of class `cls_name` saved in `folder` with a tokenizer;
  returns the model (eval mode)."""
  torch.manual_seed(0)
  model = getattr(transformers, cls_name)(_hf_config()).eval()
  with torch.no_grad():  # Non-zero biases and LayerNorm, so no mapping hides.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  folder.mkdir()
  model.config.save_pretrained(folder)
  if fmt == 'safetensors':
    model.save_pretrained(folder)
    assert (folder / 'model.safetensors').exists()
  else:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if legacy:
      state = {re.sub(r'LayerNorm\.weight$', 'LayerNorm.gamma',
                      re.sub(r'LayerNorm\.bias$', 'LayerNorm.beta', k)): v
               for k, v in state.items()}
    torch.save(state, folder / 'pytorch_model.bin')
  (folder / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
  transformers.BertTokenizerFast(str(folder / 'vocab.txt')).save_pretrained(folder)
  return model


def _inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, len(VOCAB), (3, 12))
  ids[:, 0] = 2
  mask = (np.arange(12)[None] < np.array([[12], [8], [5]])).astype(np.int64)
  segments = (np.arange(12)[None] >= 4).astype(np.int64) * mask
  return ids * mask, segments, mask


@pytest.mark.parametrize('cls_name, fmt, legacy', [
    ('BertModel', 'safetensors', False),
    ('BertModel', 'bin', False),
    ('BertForPreTraining', 'safetensors', False),
    ('BertForMaskedLM', 'bin', True),
])
def test_hf_layouts_load_with_hf_hidden_states(tmp_path, cls_name, fmt, legacy):
  folder = tmp_path / 'hf'
  hf = _save(folder, cls_name, fmt, legacy)
  model, params, tokenizer = hf_load.load_pretrained(str(folder))
  assert tokenizer.convert_tokens_to_ids('w3') == 8
  ids, segments, mask = _inputs()
  ours = np.asarray(model.apply({'params': params}, ids, segments, mask,
                                method=model.encode))
  base = hf if cls_name == 'BertModel' else hf.bert
  t = lambda x: torch.from_numpy(x).long()
  with torch.no_grad():
    theirs = base(input_ids=t(ids), token_type_ids=t(segments),
                  attention_mask=t(mask)).last_hidden_state.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4)

  imported = hf_format.from_hf_state_dict(hf_load.read_hf_tensors(str(folder)), model.cfg)
  if cls_name == 'BertModel':   # No MLM head: it starts fresh, named.
    assert set(imported.fresh) == HEAD
  else:
    assert not set(imported.fresh) & HEAD
    with torch.no_grad():
      out = hf(input_ids=t(ids), token_type_ids=t(segments), attention_mask=t(mask))
    logits = (out.logits if cls_name == 'BertForMaskedLM' else out.prediction_logits).numpy()
    np.testing.assert_allclose(np.asarray(model.apply({'params': params}, ids, segments,
                                                      mask))[real], logits[real], atol=1e-4)
  if cls_name == 'BertForPreTraining':   # The next-sentence head is ignored.
    assert {'cls.seq_relationship.weight', 'cls.seq_relationship.bias'} <= set(imported.ignored)


def test_bare_bert_model_warns_that_the_mlm_head_starts_fresh(tmp_path, caplog):
  _save(tmp_path / 'hf', 'BertModel', 'safetensors')
  with caplog.at_level('WARNING'):
    hf_load.load_pretrained(str(tmp_path / 'hf'))
  assert 'initialised afresh: cls.predictions.bias' in caplog.text


def test_init_from_takes_the_folder_shape_when_the_config_leaves_it_default(tmp_path):
  _save(tmp_path / 'hf', 'BertModel', 'safetensors')
  config = config_lib.base_config()
  config.init_from = str(tmp_path / 'hf')
  hf_load.adopt_shape(config)
  m = config.model
  assert (m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size,
          m.max_position_embeddings) == (32, 3, 4, 48, 40)
  assert m.vocab_size == -1   # Taken from the tokenizer, which must match.


def test_init_from_names_each_override_a_set_shape_needs(tmp_path):
  _save(tmp_path / 'hf', 'BertModel', 'safetensors')
  config = config_lib.base_config()
  config.init_from = str(tmp_path / 'hf')
  config.model.update(vocab_size=len(VOCAB), hidden_size=64, num_heads=4)
  hf_load.adopt_shape(config)   # A set shape is never overwritten.
  assert config.model.hidden_size == 64
  with pytest.raises(config_lib.ConfigError) as error:
    hf_load.warm_start(config, None, None, None)
  for override in ('--config.model.hidden_size=32', '--config.model.num_layers=3',
                   '--config.model.intermediate_size=48',
                   '--config.model.max_position_embeddings=40'):
    assert override in str(error.value)
  assert '--config.model.num_heads' not in str(error.value)


def test_hub_id_or_local_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert config_lib.is_pretrained('google-bert/bert-base-uncased')
  assert not config_lib.is_pretrained('./no/such/folder')
  (tmp_path / 'runs').mkdir()  # A misspelt local folder is not a Hub id.
  assert not config_lib.is_pretrained('runs/tiyn')


def test_hub_id_without_the_hub_is_a_one_line_error(tmp_path):
  """Fine-tuning from a Hub id with the Hub offline (HF_HUB_OFFLINE=1, an
  empty cache): one line saying how to get the model, no traceback."""
  run = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.evals.finetune', '--config', 'configs/finetune.py',
       '--workdir', str(tmp_path / 'ft'), '--config.init=google-bert/bert-base-uncased',
       '--config.task=tense'],
      cwd=ROOT, env=offline_env(tmp_path / 'hf'), capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert re.search(r"'google-bert/bert-base-uncased' is not a local folder.*"
                   r"huggingface-cli download", run.stderr), run.stderr[-2000:]
  assert 'Traceback' not in run.stderr
