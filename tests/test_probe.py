"""Layer-wise probing: a planted lexical signal is found and random labels are
not, SentEval files are parsed and refused clearly, and the CLI writes its
json and figure. The model is a random-init BERT saved as an HF folder: a
signal carried by one word needs no training to show in layer 1."""

import collections
import json
import random
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
import torch
import transformers

from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from sctd_jax.evals import plots
from sctd_jax.evals import probe
from sctd_jax.hf import load as hf_load
from sctd_jax.hf import save as export
from sctd_jax import models
from test_train import ROOT

NUM_LAYERS = 2
MARKERS = ('alpha', 'omega')
SIZES = {'tr': 800, 'va': 200, 'te': 600}


def _senteval_lines(labels_from_marker: bool) -> list[str]:
  """Sentences that start with a marker word; the label is the marker, or a
  coin flip independent of it."""
  rng = random.Random(0)
  texts = iter(s.text for s in synthetic.labelled_sentences(7, sum(SIZES.values())))
  lines = []
  for split, count in SIZES.items():
    for _ in range(count):
      marker = rng.choice(MARKERS)
      label = marker if labels_from_marker else rng.choice(MARKERS)
      lines.append(f'{split}\t{label}\t{marker} {next(texts)}\n')
  return lines


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  folder = tmp_path_factory.mktemp('data')
  for name, planted in (('planted', True), ('random', False)):
    (folder / f'{name}.txt').write_text(''.join(_senteval_lines(planted)))
  return folder


@pytest.fixture(scope='module')
def model_folder(tmp_path_factory, data):
  """A random-init tiny BERT whose vocabulary has the markers as whole words."""
  texts = [line.split('\t')[2] for line in open(data / 'planted.txt')]
  texts += [s.text for s in synthetic.labelled_sentences(0, 1000)]
  tokenizer = tokenizer_lib.fit_tokenizer(texts, 500)
  cfg = models.BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_layers=NUM_LAYERS,
                          num_heads=2, intermediate_size=128, max_position_embeddings=64)
  model = models.BertForMaskedLM(cfg)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
  folder = tmp_path_factory.mktemp('hf') / 'random_bert'
  export.write_hf_folder(str(folder), cfg, params, tokenizer)
  return folder


def test_probe_finds_a_planted_word_and_not_random_labels(model_folder, data):
  model, params, tokenizer = hf_load.load_pretrained(str(model_folder))
  tasks = probe.load_tasks([str(data / 'planted.txt'), str(data / 'random.txt')])
  result = probe.probe(model, params, tokenizer, tasks, 'mean', 32)
  assert set(result) == {'planted', 'random'}
  assert all(list(r) == ['1', '2'] for r in result.values())
  assert result['planted']['1'] > 0.85, result
  assert all(0.4 < acc < 0.6 for acc in result['random'].values()), result


def _torch_layer_vectors(folder, texts, pooling, max_length=32):
  """[num_layers, N, d] from HF's PyTorch BertModel(output_hidden_states)."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  bert = transformers.BertModel.from_pretrained(folder).eval()
  enc = tokenizer(texts, padding='max_length', truncation=True, max_length=max_length,
                  return_tensors='pt')
  with torch.no_grad():
    hidden = torch.stack(bert(**enc, output_hidden_states=True).hidden_states[1:])
  if pooling == 'cls':
    return hidden[:, :, 0].numpy()
  weights = enc['attention_mask'].float()[None, ..., None]
  return ((hidden * weights).sum(2) / weights.sum(2)).numpy()


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_layer_vectors_match_hf_output_hidden_states(model_folder, pooling):
  model, params, tokenizer = hf_load.load_pretrained(str(model_folder))
  texts = [s.text for s in synthetic.labelled_sentences(3, 20)] + ['a', 'alpha ' * 40]
  got = probe.encode(model, params, tokenizer, texts, pooling, 32)
  want = _torch_layer_vectors(str(model_folder), texts, pooling)
  assert got.shape == want.shape == (NUM_LAYERS, 22, 64)
  np.testing.assert_allclose(got, want, atol=1e-5)


def _sklearn_probe(features, labels):
  """SentEval's protocol written out: standardise on train, logistic
  regression per C, test accuracy at the C of best dev accuracy."""
  mean, std = features['tr'].mean(0), features['tr'].std(0)
  x = {k: (v - mean) / np.where(std > 0, std, 1.0) for k, v in features.items()}
  best = max((LogisticRegression(C=c, max_iter=5000).fit(x['tr'], labels['tr'])
              for c in (0.01, 0.1, 1.0, 10.0)),
             key=lambda fit: fit.score(x['va'], labels['va']))
  return best.score(x['te'], labels['te'])


def test_builtin_tasks_match_sklearn_on_hf_hidden_states(model_folder):
  model, params, tokenizer = hf_load.load_pretrained(str(model_folder))
  tasks = probe.load_tasks(None)
  result = probe.probe(model, params, tokenizer, tasks, 'mean', 32)
  assert list(result) == ['tense', 'subj_num']
  for name, task in tasks.items():
    assert list(result[name]) == [str(l + 1) for l in range(NUM_LAYERS)]
    labels = {split: task[split].labels for split in ('tr', 'va', 'te')}
    features = {split: _torch_layer_vectors(str(model_folder), task[split].texts, 'mean')[0]
                for split in ('tr', 'va', 'te')}
    want = _sklearn_probe(features, labels)
    # A random encoder still carries the words: above the majority class.
    majority = max(collections.Counter(labels['te']).values()) / len(labels['te'])
    assert result[name]['1'] > majority + 0.05, (name, result[name], majority)
    # Same protocol on features equal to 1e-5: the same accuracy up to a few
    # test sentences near the boundary.
    assert abs(result[name]['1'] - want) <= 0.01, (name, result[name]['1'], want)


def test_cli_compares_two_inits(model_folder, data, tmp_path):
  out = tmp_path / 'out'
  run = subprocess.run(
      [sys.executable, '-m', 'sctd_jax.evals.probe', '--init', str(model_folder), '--init',
       f'{model_folder}/', '--out', str(out), '--max_length', '32',
       '--data', str(data / 'planted.txt'), '--data', str(data / 'random.txt')],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  first, second = (json.load(open(out / name / 'probe.json'))
                   for name in ('random_bert', 'random_bert-2'))
  assert first == second and list(first) == ['planted', 'random', 'test_examples']
  assert first['test_examples'] == {'planted': SIZES['te'], 'random': SIZES['te']}
  assert list(first['planted']) == ['1', '2'] and first['planted']['1'] > 0.85
  assert (out / 'probe.png').stat().st_size > 0
  assert not (out / 'probe.json').exists()
  assert 'Probe test accuracy' in run.stderr and 'planted' in run.stderr
  # Not a terminal: a log line per task, no bar redrawn with carriage returns.
  assert 'Probed planted: test accuracy' in run.stderr and '\r' not in run.stderr


def test_read_senteval_splits(tmp_path):
  path = tmp_path / 'past_present.txt'
  path.write_text('tr\tPAST\tshe walked .\ntr\tPRES\tshe walks .\n\n'
                  'va\tPAST\the ran .\nte\tPRES\the runs\twell .\r\n')
  splits = probe.read_senteval(str(path))
  assert splits['tr'] == probe.Split(['she walked .', 'she walks .'], ['PAST', 'PRES'])
  assert splits['te'] == probe.Split(['he runs\twell .'], ['PRES'])
  assert list(probe.load_tasks([str(path)])) == ['past_present']


@pytest.mark.parametrize('content, message', [
    (None, 'no such file'),
    ('', 'no lines'),
    ('tr\tA\tx .\ntr\tB\ty .\nva A z .\nte\tA\tw .\n', 'line 3'),
    ('tr\tA\tx .\ntest\tB\ty .\n', 'line 2'),
    ('tr\tA\tx .\ntr\tB\ty .\nte\tA\tw .\n', 'no sentences in split va'),
    ('tr\tA\tx .\ntr\tA\ty .\nva\tA\tz .\nte\tA\tw .\n', 'one label'),
])
def test_bad_senteval_file_is_refused_naming_it(tmp_path, content, message):
  path = tmp_path / 'task.txt'
  if content is not None:
    path.write_text(content)
  with pytest.raises(probe.ProbeError, match=message) as e:
    probe.read_senteval(str(path))
  assert str(path) in str(e.value)


def test_run_names_are_unique():
  assert plots.run_names(['a/run', 'b/run/', 'c/other', 'run']) == [
      'run', 'run-2', 'other', 'run-3']
