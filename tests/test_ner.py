"""Few-shot NER on CoNLL column files: entity F1 against seqeval, k-shot
sampling by seed, sub-token alignment, and a tiny end-to-end run."""

import json

import numpy as np
import pytest

from conftest import save_word_bert
from sctd_jax.evals import ner

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
seqeval_metrics = pytest.importorskip('seqeval.metrics')

KINDS = ('PER', 'LOC', 'ORG')
WORDS = 'john mary lives in london works at acme berlin the and city big ltd'.split()


def _random_tags(rng, n):
  """BIO tags with some ill-formed I- starts, as a model predicts them."""
  return [str(rng.choice(['O', 'O', *(f'{p}-{k}' for p in 'BI' for k in KINDS)]))
          for _ in range(n)]


def test_entity_f1_matches_seqeval():
  rng = np.random.default_rng(0)
  for _ in range(20):
    gold = [_random_tags(rng, int(rng.integers(1, 12))) for _ in range(6)]
    predicted = [[t if rng.random() < 0.7 else str(rng.choice(['O', 'B-PER', 'I-LOC']))
                  for t in sentence] for sentence in gold]
    assert ner.entity_f1(gold, predicted) == pytest.approx(
        seqeval_metrics.f1_score(gold, predicted), abs=1e-9)


def _conll(path, n, seed):
  """A CoNLL03-style file: word POS chunk NER, documents, blank lines."""
  rng = np.random.default_rng(seed)
  lines = ['-DOCSTART- -X- -X- O', '']
  for _ in range(n):
    tags = []
    while len(tags) < 8:
      kind = str(rng.choice(KINDS))
      tags += ['O'] * int(rng.integers(0, 3)) + [f'B-{kind}'] + [f'I-{kind}'] * int(rng.integers(0, 2))
    lines += [f'{rng.choice(WORDS)} NN I-NP {t}' for t in tags] + ['']
  path.write_text('\n'.join(lines))
  return path


def test_read_conll_and_k_shot_sampling_by_seed(tmp_path):
  sentences = ner.read_conll(str(_conll(tmp_path / 'train.txt', 60, 0)))
  assert len(sentences) == 60 and all(len(w) == len(t) for w, t in sentences)
  assert sentences[0][1][-1] != 'I-NP'   # the tag is the last column
  shots = ner.sample_shots(sentences, 5, seed=1)
  counts = {k: sum(kind == k for _, tags in shots for kind, _, _ in ner.entities(tags))
            for k in KINDS}
  assert min(counts.values()) >= 5 and len(shots) < 60
  assert ner.sample_shots(sentences, 5, seed=1) == shots
  assert ner.sample_shots(sentences, 5, seed=2) != shots


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
  # 'london' and 'berlin' are two word pieces each.
  return save_word_bert(
      tmp_path_factory.mktemp('bert'),
      ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'lon', '##don', 'ber', '##lin'] + [
      w for w in WORDS if w not in ('london', 'berlin')])


def test_labels_sit_on_each_words_first_piece(bert_folder, tmp_path):
  tokenizer = transformers.AutoTokenizer.from_pretrained(bert_folder)
  sentence = (('mary', 'lives', 'in', 'london', 'berlin'), ('B-PER', 'O', 'O', 'B-LOC', 'I-LOC'))
  labels = ['B-LOC', 'B-PER', 'I-LOC', 'O']
  arrays = ner.encode(tokenizer, [sentence], labels, 16)
  pieces = tokenizer.convert_ids_to_tokens(arrays['input_ids'][0])
  assert pieces[:9] == ['[CLS]', 'mary', 'lives', 'in', 'lon', '##don', 'ber', '##lin', '[SEP]']
  assert arrays['label'][0, :9].tolist() == [-1, 1, 3, 3, 0, -1, 2, -1, -1]
  assert arrays['word'][0, :9].tolist() == [-1, 0, 1, 2, 3, -1, 4, -1, -1]


def test_few_shot_run_scores_entity_f1(bert_folder, tmp_path):
  import types
  args = types.SimpleNamespace(
      init=str(bert_folder), train_file=str(_conll(tmp_path / 'train.txt', 40, 0)),
      dev_file=str(_conll(tmp_path / 'dev.txt', 10, 1)), shots=2, max_length=24,
      learning_rate=1e-3, batch_size=4, num_epochs=2.0, eval_batch_size=8, seed=0,
      num_seeds=2)
  results = ner.run(args, str(tmp_path / 'out'))
  written = json.loads((tmp_path / 'out' / 'eval_results.json').read_text())
  assert written['num_seeds'] == 2 and len(written['per_seed']['f1']) == 2
  assert 0.0 <= results['f1'] <= 1.0
  assert results['f1'] == pytest.approx(np.mean(written['per_seed']['f1']))


def test_files_without_entities_or_sentences_are_refused_before_loading(tmp_path):
  import types
  from sctd_jax.hf import format as hf_format
  plain = tmp_path / 'plain.txt'
  plain.write_text('the O\ncity O\n\nbig O\n')
  args = types.SimpleNamespace(init='/not/loaded', train_file=str(plain), dev_file=str(plain))
  with pytest.raises(hf_format.FormatError, match='plain.txt has no entity'):
    ner.run(args, str(tmp_path / 'out'))
  (tmp_path / 'empty.txt').write_text('-DOCSTART- O\n\n')
  args.train_file, args.dev_file = str(_conll(tmp_path / 'train.txt', 10, 0)), str(tmp_path / 'empty.txt')
  with pytest.raises(hf_format.FormatError, match='empty.txt has no sentences'):
    ner.run(args, str(tmp_path / 'out'))
