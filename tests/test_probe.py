"""Layer-wise probing: a planted lexical signal is found and random labels are
not, SentEval files are parsed and refused clearly, and the CLI writes its
json and figure. The model is a random-init BERT saved as an HF folder: a
signal carried by one word needs no training to show in layer 1."""

import json
import random
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

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


def test_builtin_tasks_give_an_accuracy_per_task_and_layer(model_folder):
  model, params, tokenizer = hf_load.load_pretrained(str(model_folder))
  result = probe.probe(model, params, tokenizer, probe.load_tasks(None), 'mean', 32)
  assert list(result) == ['tense', 'subj_num']
  for accuracies in result.values():
    assert list(accuracies) == [str(l + 1) for l in range(NUM_LAYERS)]
    assert all(0.0 <= acc <= 1.0 for acc in accuracies.values())


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
