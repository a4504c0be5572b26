"""The built-in corpus: determinism, labels, balance, variety and learnability.

Labels are checked against the surface text with tables written here, not
with the generator's own lexicon.
"""

import collections
import dataclasses
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from sctd_jax.data import synthetic

SUBORDINATORS = {'because', 'when', 'while', 'after', 'before'}
TEMPORAL_SUBORDINATORS = SUBORDINATORS - {'because'}
BE = {'is': ('present', 'singular'), 'are': ('present', 'plural'),
      'was': ('past', 'singular'), 'were': ('past', 'plural')}
# base: (third person singular, past) of irregular verbs whose past participle
# differs from their past, so that a past form is never a passive participle.
IRREGULAR = {
    'eat': ('eats', 'ate'), 'take': ('takes', 'took'), 'see': ('sees', 'saw'),
    'drive': ('drives', 'drove'), 'write': ('writes', 'wrote'),
    'ride': ('rides', 'rode'), 'grow': ('grows', 'grew'),
    'choose': ('chooses', 'chose'), 'steal': ('steals', 'stole'),
    'break': ('breaks', 'broke'), 'throw': ('throws', 'threw'),
    'forget': ('forgets', 'forgot'), 'draw': ('draws', 'drew'),
    'run': ('runs', 'ran'), 'swim': ('swims', 'swam'), 'sing': ('sings', 'sang'),
    'sink': ('sinks', 'sank'), 'fall': ('falls', 'fell'),
    'speak': ('speaks', 'spoke'), 'wake': ('wakes', 'woke'),
}
BASES = set(IRREGULAR)
THIRDS = {third for third, _ in IRREGULAR.values()}
PASTS = {past for _, past in IRREGULAR.values()}
TIME_CUES = {'yesterday': 'past', 'ago': 'past', 'last': 'past',
             'every': 'present', 'each': 'present', 'nowadays': 'present',
             'tomorrow': 'future', 'next': 'future', 'soon': 'future'}


def words(text):
  return text[:-1].split()


def main_clause(text):
  """The words before the first subordinating conjunction."""
  out = []
  for w in words(text):
    if w in SUBORDINATORS:
      break
    out.append(w)
  return out


def entropy(counts):
  total = sum(counts.values())
  return -sum(c / total * math.log2(c / total) for c in counts.values())


@pytest.fixture(scope='module')
def docs():
  return [synthetic.document(3, i) for i in range(2000)]


@pytest.fixture(scope='module')
def labelled():
  return synthetic.labelled_sentences(5, 3000)


@pytest.fixture(scope='module')
def pairs():
  return synthetic.paraphrase_pairs(7, 4000)


def test_document_is_deterministic_and_random_access():
  forward = [synthetic.document(11, i) for i in range(30)]
  backward = [synthetic.document(11, i) for i in reversed(range(30))][::-1]
  assert forward == backward
  assert synthetic.document(11, 5) == forward[5]
  assert synthetic.document(12, 5) != forward[5]
  assert len({tuple(d) for d in forward}) == 30
  assert synthetic.document(11, 10**12) != synthetic.document(11, 10**12 + 1)


def test_streams_are_deterministic_and_seeded():
  assert synthetic.labelled_sentences(1, 50) == synthetic.labelled_sentences(1, 50)
  assert synthetic.labelled_sentences(1, 50) != synthetic.labelled_sentences(2, 50)
  assert synthetic.paraphrase_pairs(1, 50) == synthetic.paraphrase_pairs(1, 50)
  assert synthetic.paraphrase_pairs(1, 50) != synthetic.paraphrase_pairs(2, 50)


def test_independent_of_hash_randomisation():
  code = ('from sctd_jax.data import synthetic as s; '
          'print(repr((s.document(4, 9), s.labelled_sentences(4, 20), '
          's.paraphrase_pairs(4, 20))))')
  root = pathlib.Path(__file__).resolve().parents[1]
  outputs = set()
  for hash_seed in ('1', '2'):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get('PYTHONPATH', '')]))
    outputs.add(subprocess.run([sys.executable, '-c', code], env=env, cwd=root, check=True,
                               capture_output=True, text=True).stdout)
  here = repr((synthetic.document(4, 9), synthetic.labelled_sentences(4, 20),
               synthetic.paraphrase_pairs(4, 20))) + '\n'
  assert outputs == {here}


def test_shape_of_documents_and_sentences(docs):
  assert {len(d) for d in docs} == set(range(4, 13))
  assert len(synthetic.TOPICS) >= 8
  for s in (s for d in docs for s in d):
    assert re.fullmatch(r'[a-z]+( [a-z]+)+\.', s.text), s.text
    assert s.tense in synthetic.TENSES
    assert s.subject_number in synthetic.SUBJECT_NUMBERS
  with pytest.raises(dataclasses.FrozenInstanceError):
    docs[0][0].tense = 'past'


@pytest.mark.parametrize('source', ['docs', 'labelled'])
def test_labels_match_the_main_clause(source, request):
  sentences = request.getfixturevalue(source)
  if source == 'docs':
    sentences = [s for d in sentences for s in d]
  checked = collections.Counter()
  for s in sentences:
    main, label = main_clause(s.text), (s.tense, s.subject_number)
    assert ('will' in main) == (s.tense == 'future'), s
    for w in main:
      if w in BE:
        assert label == BE[w], s
        checked['be'] += 1
      elif w in PASTS:
        assert s.tense == 'past', s
        checked['past'] += 1
      elif w in THIRDS:
        assert label == ('present', 'singular'), s
        checked['third'] += 1
      elif w in BASES and 'will' not in main:
        assert label == ('present', 'plural'), s
        checked['base'] += 1
  # Each check ran often enough to mean something.
  assert min(checked[k] for k in ('be', 'past', 'third', 'base')) >= 20, checked


def test_time_adverbials_and_sequence_of_tenses(docs, labelled):
  sentences = [s for d in docs for s in d] + labelled
  cued = 0
  for s in sentences:
    cues = {TIME_CUES[w] for w in words(s.text) if w in TIME_CUES}
    if cues:
      assert cues == {s.tense}, s
      cued += 1
    ws = words(s.text)
    for i, w in enumerate(ws):
      if w in TEMPORAL_SUBORDINATORS:   # "will sleep when they arrive".
        assert 'will' not in ws[i:], s
  assert cued > len(sentences) / 10


def test_number_is_not_given_by_the_nearest_word(labelled):
  # "the farmer near the barns is", "the sheep are", "the cow and the goat
  # are": the word before the verb often looks like the other number.
  misleading = collections.Counter()
  for s in labelled:
    main = main_clause(s.text)
    for before, verb in zip(main, main[1:]):
      if verb in BE and before.endswith('s') != (BE[verb][1] == 'plural'):
        misleading[BE[verb][1]] += 1
  assert min(misleading['singular'], misleading['plural']) > 20, misleading


def test_labelled_sentences_are_balanced():
  for count in (6, 601, 1000):
    sentences = synthetic.labelled_sentences(0, count)
    assert len(sentences) == count
    for counts, cells in (
        (collections.Counter(s.tense for s in sentences), 3),
        (collections.Counter(s.subject_number for s in sentences), 2),
        (collections.Counter((s.tense, s.subject_number) for s in sentences), 6)):
      assert len(counts) == cells
      assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_paraphrase_pairs_are_balanced_and_non_trivial(pairs):
  assert collections.Counter(label for _, _, label in pairs) == {0: 2000, 1: 2000}
  odd = collections.Counter(label for _, _, label in synthetic.paraphrase_pairs(0, 7))
  assert sorted(odd.values()) == [3, 4] and set(odd) == {0, 1}

  def overlap(a, b):
    a, b = set(words(a)), set(words(b))
    return len(a & b) / min(len(a), len(b))

  negatives = [(a, b) for a, b, label in pairs if label == 0]
  positives = [(a, b) for a, b, label in pairs if label == 1]
  assert all(a != b for a, b in negatives + positives)
  negative_overlap = [overlap(a, b) for a, b in negatives]
  assert sum(negative_overlap) / len(negatives) > 0.7
  assert sum(o >= 0.5 for o in negative_overlap) > 0.95 * len(negatives)
  # Some negatives use exactly the same words ("the dog chased the cat").
  assert any(sorted(words(a)) == sorted(words(b)) for a, b in negatives)
  # Paraphrases change the surface, often beyond word order (passive, synonyms).
  assert sum(set(words(a)) != set(words(b)) for a, b in positives) > 0.5 * len(positives)
  # Word overlap alone does not give the label away.
  scored = [(overlap(a, b), label) for a, b, label in pairs]
  best = max(sum((o >= t) == (label == 1) for o, label in scored)
             for t in [i / 20 for i in range(21)])
  assert best < 0.85 * len(pairs)


def test_variety(docs):
  sentences = [s.text for d in docs for s in d]
  types = {w for text in sentences for w in words(text)}
  assert len(types) >= 1000
  assert len(set(sentences)) > 0.95 * len(sentences)
  assert collections.Counter(s.tense for d in docs for s in d).keys() == set(synthetic.TENSES)


def test_context_predicts_words_better_than_frequency(docs):
  tokens = []
  for d in docs:
    for s in d:
      tokens += ['<s>', *words(s.text)]
  unigram = collections.Counter(tokens)
  bigram = collections.Counter(zip(tokens, tokens[1:]))
  h_word = entropy(unigram)
  h_word_given_previous = entropy(bigram) - entropy(collections.Counter(tokens[:-1]))
  assert h_word - h_word_given_previous > 2.5, (h_word, h_word_given_previous)

  # The same on held-out text, so that a sparse bigram table cannot fake it:
  # cross-entropy of an add-one unigram vs an interpolated bigram model.
  half = len(tokens) // 2
  train, test = tokens[:half], tokens[half:]
  uni, big = collections.Counter(train), collections.Counter(zip(train, train[1:]))
  prev, vocab = collections.Counter(train[:-1]), len(unigram) + 1
  p_uni = lambda w: (uni[w] + 1) / (len(train) + vocab)
  p_big = lambda a, b: 0.8 * (big[a, b] / prev[a] if prev[a] else 0.0) + 0.2 * p_uni(b)
  ce_uni = -sum(math.log2(p_uni(b)) for b in test[1:]) / (len(test) - 1)
  ce_big = -sum(math.log2(p_big(a, b)) for a, b in zip(test, test[1:])) / (len(test) - 1)
  assert ce_uni - ce_big > 1.5, (ce_uni, ce_big)


def test_documents_keep_to_a_topic(docs):
  def halves(d):
    return set(w for s in d[:len(d) // 2] for w in words(s.text)), \
        set(w for s in d[len(d) // 2:] for w in words(s.text))

  def jaccard(a, b):
    return len(a & b) / len(a | b)

  split = [halves(d) for d in docs[:500]]
  same = sum(jaccard(a, b) for a, b in split) / len(split)
  other = sum(jaccard(split[i][0], split[i - 1][1]) for i in range(len(split))) / len(split)
  assert same > 1.5 * other, (same, other)


def test_lexicon_covers_every_emitted_word(docs, labelled, pairs):
  lexicon = synthetic.lexicon_words()
  assert len(lexicon) >= 400
  emitted = {w for d in docs for s in d for w in words(s.text)}
  emitted |= {w for s in labelled for w in words(s.text)}
  emitted |= {w for a, b, _ in pairs for w in words(a) + words(b)}
  assert emitted <= lexicon, emitted - lexicon
  # And it is not padded with words the grammar never uses.
  assert len(emitted) > 0.98 * len(lexicon), sorted(lexicon - emitted)
  assert {'ran', 'ate', 'took', 'children', 'mice', 'geese'} <= lexicon
  lexicon.add('not a word')   # A copy: the module's set is unchanged.
  assert 'not a word' not in synthetic.lexicon_words()
