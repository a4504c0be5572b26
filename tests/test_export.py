"""Export to and import from Hugging Face, end to end: a real tiny run is
exported with the CLI, loaded by HF's PyTorch models and pipeline, compared
by logits, round-tripped, and used to start a new run (`init_from`)."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import safetensors.numpy

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from sctd_jax import config as config_lib
from sctd_jax.data import pipeline
from sctd_jax.data import tokenizer as tokenizer_lib
from sctd_jax.hf import format as hf_format
from sctd_jax.hf import load as hf_load
from sctd_jax.hf import save as export
from sctd_jax import scan_layers
from test_train import ROOT, SMALL

# Baseline: the smallest step to compile; what is exported does not depend
# on the method. lr 5e-3 moves biases and LayerNorms well away from their
# init, so a wrong mapping of them shows in the logits.
ARGS = [*SMALL, '--config.method=baseline', '--config.train.warmup_steps=1',
        '--config.train.learning_rate=5e-3', '--config.train.log_every=5',
        '--config.train.eval_every=1000', '--config.train.checkpoint_every=5']
POOLER = set(hf_format.POOLER)


def _cli(module, *args):
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def _train(workdir, *extra):
  return _cli('sctd_jax.train', '--config', 'configs/tiny.py', '--workdir',
              workdir, *ARGS, *extra)


def _export(workdir, out, *extra):
  return _cli('sctd_jax.export', '--workdir', workdir, '--out', out, *extra)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A 10-step run with checkpoints at steps 5 and 10."""
  workdir = tmp_path_factory.mktemp('run')
  result = _train(workdir, '--config.train.num_steps=10')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope='module')
def out(run, tmp_path_factory):
  """The run exported by the CLI (newest checkpoint)."""
  folder = tmp_path_factory.mktemp('hf') / 'model'
  result = _export(run, folder)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'step 10 to {folder}' in result.stdout
  return folder


def _inputs(vocab_size, seed=0):
  """Random ids with [CLS]/[SEP], right padding and two segments."""
  rng = np.random.default_rng(seed)
  lengths, splits = np.array([32, 20, 27, 9]), np.array([16, 8, 20, 4])
  ids = rng.integers(5, vocab_size, (4, 32))
  mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int64)
  ids[:, 0] = 2                                   # [CLS]
  ids[np.arange(4), lengths - 1] = 3              # [SEP]
  segments = (np.arange(32)[None] >= splits[:, None]) * mask
  return ids * mask, segments, mask


def _loading_info(cls, folder):
  _, info = cls.from_pretrained(folder, output_loading_info=True)
  return info


def test_hf_table_matches_pytorch_bert():
  config = transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3,
                                   num_attention_heads=2, intermediate_size=12,
                                   max_position_embeddings=20, type_vocab_size=3)
  shapes = lambda model: {k: tuple(v.shape) for k, v in model.state_dict().items()}
  mlm = shapes(transformers.BertForMaskedLM(config))
  assert {k: v for k, v in mlm.items() if k not in hf_format.TIED} == \
      hf_format.hf_bert_shapes(config)
  base = shapes(transformers.BertModel(config))
  assert {f'bert.{k}': v for k, v in base.items() if k.startswith('pooler.')} == \
      hf_format.pooler_shapes(config)


def test_hf_pytorch_loads_the_export_cleanly_and_gives_our_logits(run, out):
  info = _loading_info(transformers.AutoModelForMaskedLM, out)
  assert not any(info.values()), info   # missing, unexpected, mismatched, errors
  hf = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
  model, params, _ = hf_load.load_pretrained(str(run))
  ids, segments, mask = _inputs(model.cfg.vocab_size)
  ours = np.asarray(model.apply({'params': params}, ids, segments, mask))
  with torch.no_grad():
    theirs = hf(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                attention_mask=torch.from_numpy(mask)).logits.numpy()
  assert ours.shape == theirs.shape == (4, 32, model.cfg.vocab_size)
  diff = np.abs(ours - theirs).max()
  assert diff <= 1e-4, diff
  assert np.abs(theirs).mean() > 0.1   # not a degenerate model


def test_base_model_and_classifier_load_with_only_their_new_parts_missing(out):
  base = _loading_info(transformers.BertModel, out)
  assert base['missing_keys'] == {'pooler.dense.weight', 'pooler.dense.bias'}
  classifier = _loading_info(transformers.BertForSequenceClassification, out)
  # The pooler is not exported: no pretraining loss trains it (see export.py).
  assert classifier['missing_keys'] == {'classifier.weight', 'classifier.bias'} | POOLER
  for info in (base, classifier):
    assert all(k.startswith('cls.predictions.') for k in info['unexpected_keys'])
    assert not info['mismatched_keys'] and not info['error_msgs']


def test_fill_mask_pipeline_agrees_with_our_model(out):
  fill = transformers.pipeline('fill-mask', model=str(out), tokenizer=str(out))
  text = f'the old man {fill.tokenizer.mask_token} the letter yesterday .'
  predictions = fill(text, top_k=5)
  assert len(predictions) == 5 and all(0 < p['score'] < 1 for p in predictions)
  model, params, tokenizer = hf_load.load_pretrained(str(out))
  enc = tokenizer(text, return_tensors='np')
  logits = model.apply({'params': params}, enc['input_ids'], enc['token_type_ids'],
                       enc['attention_mask'])
  at_mask = np.asarray(logits)[0, list(enc['input_ids'][0]).index(tokenizer.mask_token_id)]
  # Scores, not the order: a near-tie may sort either way across frameworks.
  probs = np.exp(at_mask - at_mask.max())
  probs /= probs.sum()
  np.testing.assert_allclose([p['score'] for p in predictions],
                             [probs[p['token']] for p in predictions], atol=1e-5)
  np.testing.assert_allclose([p['score'] for p in predictions], np.sort(probs)[::-1][:5],
                             atol=1e-5)


def test_exported_tokenizer_tokenizes_like_the_runs(run, out):
  ours = transformers.AutoTokenizer.from_pretrained(run / 'tokenizer')
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  assert theirs.get_vocab() == ours.get_vocab()
  texts = ['The girls were walking home.', 'A Zebra? Unseen-words, 42 of them!']
  assert theirs(texts, texts[::-1]) == ours(texts, texts[::-1])


def test_export_import_export_is_the_identity(out, tmp_path):
  model, params, tokenizer = hf_load.load_pretrained(str(out))
  export.write_hf_folder(tmp_path, model.cfg, params, tokenizer)
  first = safetensors.numpy.load_file(out / 'model.safetensors')
  second = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  assert first.keys() == second.keys()
  for name in first:
    assert first[name].dtype == second[name].dtype == np.float32, name
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  read = lambda folder: json.load(open(folder / 'config.json'))
  assert read(out) == read(tmp_path)


def test_step_flag_exports_that_checkpoint(run, out, tmp_path):
  result = _export(run, tmp_path, '--step', 5)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 5 ' in result.stdout
  written = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  step5 = hf_load.load_workdir(str(run), 5)
  assert step5.step == 5
  expected = export.hf_tensors(step5.params, hf_format.to_hf_config(step5.model.cfg))
  for name, value in expected.items():
    np.testing.assert_array_equal(written[name], value, err_msg=name)
  newest = safetensors.numpy.load_file(out / 'model.safetensors')
  assert not np.array_equal(newest['cls.predictions.bias'], written['cls.predictions.bias'])


def test_export_errors_name_the_problem(run, out, tmp_path):
  bad_step = _export(run, tmp_path / 'a', '--step', 7)
  assert bad_step.returncode != 0
  assert 'step 7' in bad_step.stderr and 'available steps: 5, 10' in bad_step.stderr
  no_config = _export(tmp_path, tmp_path / 'b')
  assert no_config.returncode != 0 and 'config.json not found' in no_config.stderr
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  shutil.copy(run / 'config.json', untrained)
  no_checkpoint = _export(untrained, tmp_path / 'c')
  assert no_checkpoint.returncode != 0 and 'No checkpoint in' in no_checkpoint.stderr
  assert not (untrained / 'checkpoints').exists()
  already = _export(out, tmp_path / 'd')
  assert already.returncode != 0
  assert f'{out} holds a Hugging Face model, not a training workdir' in already.stderr
  for name in 'abcd':
    assert not (tmp_path / name).exists()
  # Into a folder of another kind: refused before its config.json is overwritten.
  before = (run / 'config.json').read_text(), (out / 'config.json').read_text()
  onto_run = _export(run, run)
  assert onto_run.returncode != 0 and 'Traceback' not in onto_run.stderr
  assert f'--out={run} holds a pretraining run (written by python -m sctd_jax.train)' in (
      onto_run.stderr)
  onto_export = _train(out)
  assert onto_export.returncode != 0 and 'Traceback' not in onto_export.stderr
  assert f'--workdir={out} holds a Hugging Face model' in onto_export.stderr
  assert ((run / 'config.json').read_text(), (out / 'config.json').read_text()) == before
  assert not (out / 'checkpoints').exists() and not (out / 'tokenizer').exists()


def test_import_takes_tied_copies_legacy_names_and_a_pooler(run, out):
  step10 = hf_load.load_workdir(str(run))
  tensors = hf_format.to_hf_state_dict(step10.params)   # tied copies, pooler
  tensors = {k.replace('LayerNorm.weight', 'LayerNorm.gamma')
              .replace('LayerNorm.bias', 'LayerNorm.beta'): v for k, v in tensors.items()}
  extra = {'cls.seq_relationship.weight': np.zeros((2, 32), np.float32),
           'bert.embeddings.position_ids': np.arange(128)[None]}
  imported = hf_format.from_hf_state_dict({**tensors, **extra}, step10.model.cfg)
  assert imported.fresh == () and imported.ignored == tuple(sorted(extra))
  jax.tree.map(np.testing.assert_array_equal, imported.params, step10.params)

  plain = hf_format.from_hf_state_dict(
      safetensors.numpy.load_file(out / 'model.safetensors'), step10.model.cfg)
  assert set(plain.fresh) == POOLER and plain.ignored == ()


@pytest.mark.parametrize('change, message', [
    (lambda t: t.pop('bert.encoder.layer.1.output.dense.bias'),
     'missing: bert.encoder.layer.1.output.dense.bias'),
    (lambda t: t.update({'bert.encoder.layer.4.output.dense.bias': np.zeros(32)}),
     'unused: bert.encoder.layer.4.output.dense.bias'),
    (lambda t: t.update({'cls.predictions.bias': np.zeros(7)}),
     'cls.predictions.bias has shape (7,), HF expects (400,)'),
    (lambda t: t.update({'cls.predictions.decoder.weight':
                         t['bert.embeddings.word_embeddings.weight'] + 1}),
     'cls.predictions.decoder.weight differs from bert.embeddings.word_embeddings'),
])
def test_import_refuses_tensors_that_do_not_fit(run, out, change, message):
  cfg = hf_load.load_workdir(str(run)).model.cfg
  assert cfg.vocab_size == 400 and cfg.hidden_size == 32
  tensors = safetensors.numpy.load_file(out / 'model.safetensors')
  change(tensors)
  with pytest.raises(hf_format.FormatError, match=re.escape(message)):
    hf_format.from_hf_state_dict(tensors, cfg)


def test_export_check_refuses_a_tree_hf_does_not_have(run):
  step10 = hf_load.load_workdir(str(run))
  hf_config = hf_format.to_hf_config(step10.model.cfg)
  params = scan_layers.unstack_layers(jax.tree.map(np.asarray, step10.params))
  del params['bert']['encoder']['layer']['3']['attention']['self']['key']['bias']
  params['cls']['predictions']['scale'] = np.ones(3)
  with pytest.raises(hf_format.FormatError) as error:
    export.hf_tensors(params, hf_config)
  assert 'missing: bert.encoder.layer.3.attention.self.key.bias' in str(error.value)
  assert 'unused: cls.predictions.weight' in str(error.value)


@pytest.mark.parametrize('field, value', [
    ('position_embedding_type', 'relative_key'), ('is_decoder', True),
    ('tie_word_embeddings', False), ('model_type', 'roberta'), ('hidden_act', 'silu'),
])
def test_hf_configs_we_cannot_represent_are_refused_by_name(out, field, value):
  config = json.load(open(out / 'config.json'))
  assert hf_format.from_hf_config(config).hidden_size == 32
  with pytest.raises(hf_format.FormatError, match=f'{field}={value!r}'):
    hf_format.from_hf_config({**config, field: value})


def test_init_from_starts_a_run_from_the_exported_params(out, tmp_path):
  # One step whose learning rate is 0 (warmup from 0): the saved params are
  # exactly those the run started from.
  result = _train(tmp_path, '--config.train.num_steps=1', f'--config.init_from={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  # configs/tiny.py's 4 layers: 5 embedding tensors (3 tables, LayerNorm's 2),
  # 16 a layer (4 projections and 2 FFN matrices with biases, 2 LayerNorms
  # of 2) and 5 in the MLM head (transform and its LayerNorm, decoder bias).
  assert f'Loaded {5 + 4 * 16 + 5} tensors from {out}' in result.stderr
  assert 'initialised afresh: bert.pooler.dense.bias, bert.pooler.dense.weight' in result.stderr
  _, started, tokenizer = hf_load.load_pretrained(str(tmp_path))
  _, exported, exported_tokenizer = hf_load.load_pretrained(str(out))
  jax.tree.map(np.testing.assert_array_equal, started, exported)
  assert tokenizer.get_vocab() == exported_tokenizer.get_vocab()


def test_init_from_refuses_another_shape_naming_the_key(out, tmp_path):
  result = _train(tmp_path, '--config.train.num_steps=1', f'--config.init_from={out}',
                  '--config.model.intermediate_size=128')
  assert result.returncode != 0
  assert 'init_from' in result.stderr, result.stderr[-2000:]
  assert 'pass --config.model.intermediate_size=64' in result.stderr
  assert not (tmp_path / 'checkpoints').exists() or not os.listdir(tmp_path / 'checkpoints')


def test_init_from_refuses_a_workdir_tokenizer_of_another_vocabulary(run, out):
  config = ml_collections.ConfigDict(json.load(open(run / 'config.json')))
  config.init_from = str(out)
  other = tokenizer_lib.fit_tokenizer(['a few other words'] * 10, vocab_size=100)
  model = hf_load.load_workdir(str(run)).model
  with pytest.raises(config_lib.ConfigError, match='tokenizer differs'):
    hf_load.warm_start(config, model, other, state=None)
