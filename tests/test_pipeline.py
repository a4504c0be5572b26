"""Tokenizer, packing and masking of the built-in corpus."""

import numpy as np
import pytest
import scipy.stats
import tokenizers
import transformers

from sctd_jax import config as config_lib
from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax.data import synthetic
from sctd_jax.data import tokenizer as tokenizer_lib
from conftest import tiny_config


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  config = tiny_config(**{'data.vocab_size': 600, 'data.tokenizer_docs': 300})
  workdir = str(tmp_path_factory.mktemp('run'))
  return tokenizer_lib.load_or_fit_tokenizer(config, workdir), workdir


def test_tokenizer_is_saved_and_reloads_identically(tokenizer):
  tok, workdir = tokenizer
  again = transformers.AutoTokenizer.from_pretrained(f'{workdir}/tokenizer')
  text = synthetic.document(0, 12345)[0].text
  assert tok(text)['input_ids'] == again(text)['input_ids']
  assert again.unk_token_id not in again(text, add_special_tokens=False)['input_ids']
  allow, deny = tokenizer_lib.special_ids(again)
  assert set(allow) == {again.cls_token_id, again.sep_token_id, again.mask_token_id}
  assert deny == [again.pad_token_id]


def test_packed_blocks_are_framed_and_deterministic(tokenizer):
  tok, _ = tokenizer
  source = sources.SyntheticSource(tok, 64, seed=0)
  a, b = source.block(3), source.block(3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(source.block(4), a)
  val = sources.SyntheticSource(tok, 64, seed=0, split='validation')
  assert not np.array_equal(val.block(3), a)
  for row in (source.block(i) for i in range(20)):
    n = int((row != tok.pad_token_id).sum())
    assert row[0] == tok.cls_token_id and row[n - 1] == tok.sep_token_id
    assert (row[n:] == tok.pad_token_id).all() and n > 40   # well filled
    inner = row[1:n - 1]
    assert not np.isin(inner, tok.all_special_ids).any()
    assert tok.decode(inner).endswith('.')   # whole sentences only
  # At a seq_len shorter than some sentences, no block is left empty.
  short = sources.SyntheticSource(tok, 12, seed=0)
  assert all((short.block(i) != tok.pad_token_id).sum() > 2 for i in range(100))


def test_masking_statistics(tokenizer):
  tok, _ = tokenizer
  masker = pipeline.Masker(tok, probability=0.15, max_predictions=40)
  rng = np.random.default_rng(0)
  B, S = 3000, 128
  ids = rng.choice(masker.random_ids, (B, S)).astype(np.int32)
  lengths = rng.integers(60, S + 1, B)
  ids[np.arange(S)[None] >= lengths[:, None]] = tok.pad_token_id
  ids[:, 0] = tok.cls_token_id
  ids[np.arange(B), lengths - 1] = tok.sep_token_id
  out = masker(ids, [[1, i] for i in range(B)])
  w = out['mlm_weights'] > 0
  pos, labels = out['mlm_positions'], out['mlm_ids']
  rows = np.arange(B)[:, None]
  # Never a special token, labels are the originals, no position twice.
  assert not np.isin(ids[rows, pos][w], tok.all_special_ids).any()
  np.testing.assert_array_equal(labels[w], ids[rows, pos][w])
  assert all(len(set(p[m])) == m.sum() for p, m in zip(pos, w))
  # ~15% of the maskable tokens of each row.
  rate = w.sum() / (lengths - 2).sum()
  assert abs(rate - 0.15) < 0.005, rate
  # 80 / 10 / 10 within sampling error (about 0.003 for 0.8 here).
  new = out['input_ids'][rows, pos][w]
  masked = (new == tok.mask_token_id).mean()
  kept = (new == labels[w]).mean()
  random = 1 - masked - kept
  assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(random - 0.1) < 0.01
  # Untouched outside the targets.
  target = np.zeros((B, S), bool)
  target[rows, pos] = w
  assert not (out['input_ids'] != ids)[~target].any()


def test_masking_caps_at_max_predictions_and_handles_empty_rows(tokenizer):
  tok, _ = tokenizer
  masker = pipeline.Masker(tok, probability=0.5, max_predictions=5)
  ids = np.full((2, 32), 100, np.int32)
  ids[1] = tok.pad_token_id
  ids[:, 0] = tok.cls_token_id
  out = masker(ids, [[i] for i in range(2)])
  assert out['mlm_weights'][0].sum() == 5 and out['mlm_weights'][1].sum() == 0
  np.testing.assert_array_equal(out['input_ids'][1], ids[1])


def test_whole_word_masking_keeps_word_pieces_together(tokenizer):
  tok, _ = tokenizer
  rng = np.random.default_rng(0)
  texts = [' '.join(s.text for s in synthetic.document(7, i)) for i in range(200)]
  ids = [x[:62] for x in tok(texts, add_special_tokens=False)['input_ids']]
  rows = np.stack([np.pad([tok.cls_token_id, *x, tok.sep_token_id], (0, 64 - len(x) - 2),
                          constant_values=tok.pad_token_id) for x in ids]).astype(np.int32)
  pieces = np.array([t.startswith('##') for t in tok.convert_ids_to_tokens(range(len(tok)))])
  assert pieces[rows].mean() > 0.15   # enough split words to test on
  masker = pipeline.Masker(tok, 0.15, max_predictions=20, whole_word=True)
  out = masker(rows, rng.integers(1 << 30, size=(len(rows), 1)))
  target = np.zeros(rows.shape, bool)
  np.put_along_axis(target, out['mlm_positions'], out['mlm_weights'] > 0, axis=1)
  maskable = ~np.isin(rows, tok.all_special_ids)
  for row, t, m in zip(rows, target, maskable):
    starts = [i for i in range(64) if m[i] and not pieces[row[i]]] + [64]
    words = [range(a, b) for a, b in zip(starts, starts[1:])]
    words = [[i for i in w if m[i]] for w in words]
    assert all(t[w].all() or not t[w].any() for w in words)
  # Below 15% by less than one word per row.
  rate = target.sum() / maskable.sum()
  assert 0.15 - 2.0 * len(rows) / maskable.sum() < rate <= 0.15 + 0.01, rate
  whole = out['input_ids'][target]
  assert abs((whole == tok.mask_token_id).mean() - 0.8) < 0.05


def test_whole_word_masking_refuses_a_tokenizer_without_word_pieces():
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token='[UNK]'))
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=bpe, unk_token='[UNK]', mask_token='[MASK]', pad_token='[PAD]')
  with pytest.raises(config_lib.ConfigError, match='data.whole_word_masking'):
    pipeline.Masker(tok, 0.15, 5, whole_word=True)


def test_batches_resume_at_any_position(tokenizer):
  tok, workdir = tokenizer
  config = tiny_config(**{'data.seq_len': 64, 'data.max_predictions': 10})
  first = pipeline.batches(config, tok, position=0)
  run = [next(first) for _ in range(4)]
  resumed = next(pipeline.batches(config, tok, position=2 * config.train.batch_size))
  for key in run[2]:
    np.testing.assert_array_equal(resumed[key], run[2][key])
  assert run[2]['input_ids'].shape == (config.train.batch_size, 64)
  assert run[2]['mlm_positions'].shape == (config.train.batch_size, 10)


def test_tokenizer_without_mask_token_is_refused(tokenizer):
  tok, _ = tokenizer
  broken = transformers.BertTokenizerFast(tokenizer_object=tok.backend_tokenizer,
                                          mask_token=None)
  broken.mask_token = None
  with pytest.raises(config_lib.ConfigError, match='mask_token'):
    tokenizer_lib.special_ids(broken)


def test_unigram_entropy_matches_direct_count(tokenizer):
  tok, _ = tokenizer
  source = sources.SyntheticSource(tok, 64, seed=0)
  counts = {}
  for i in range(20):
    for t in source.block(i):
      if t not in tok.all_special_ids:
        counts[t] = counts.get(t, 0) + 1
  total = sum(counts.values())
  want = -sum(c / total * np.log(c / total) for c in counts.values())
  assert pipeline.unigram_entropy(source, 20) == pytest.approx(want, rel=1e-9)
  assert want > 3.0   # a vocabulary of hundreds of words in use


def test_row_uniforms_are_uniform_and_keyed_by_row_alone():
  keys = np.stack([np.full(4000, 7), np.full(4000, 1), np.arange(4000)], axis=1)
  u = pipeline.row_uniforms(keys, 50)
  assert u.shape == (4000, 50) and 0 <= u.min() and u.max() < 1
  # A row's numbers do not depend on the rows beside it or on how many follow.
  np.testing.assert_array_equal(pipeline.row_uniforms(keys[[123, 5]], 50)[0], u[123])
  np.testing.assert_array_equal(pipeline.row_uniforms(keys[:1], 80)[0, :50], u[0])
  assert not np.array_equal(pipeline.row_uniforms([[7, 0, 0]], 50)[0], u[0])
  # Uniform, and uncorrelated between neighbouring columns and rows.
  assert scipy.stats.kstest(u.ravel(), 'uniform').pvalue > 1e-3
  assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
  assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01


def test_masked_words_are_the_lowest_scored_that_fit(tokenizer):
  """Against a direct per-row reference: words in the order of their
  scores, taken while they fit in round(rate x maskable) targets."""
  tok, _ = tokenizer
  texts = [' '.join(s.text for s in synthetic.document(3, i)) for i in range(100)]
  ids = [x[:46] for x in tok(texts, add_special_tokens=False)['input_ids']]
  rows = np.stack([np.pad([tok.cls_token_id, *x, tok.sep_token_id], (0, 48 - len(x) - 2),
                          constant_values=tok.pad_token_id) for x in ids]).astype(np.int32)
  rows[7, 10:] = tok.pad_token_id
  pieces = np.array([t.startswith('##') for t in tok.convert_ids_to_tokens(range(len(tok)))])
  special = set(tok.all_special_ids)
  keys = np.stack([np.zeros(100, int), np.arange(100)], axis=1)
  for whole_word, rate, cap in ((True, 0.15, 6), (True, 0.5, 30), (False, 0.15, 6)):
    out = pipeline.Masker(tok, rate, cap, whole_word)(rows, keys)
    uniform = pipeline.row_uniforms(keys, 48 + 2 * cap)
    for r, row in enumerate(rows):
      words = []  # Lists of positions; a word takes the score of its number.
      for i, t in enumerate(row):
        if t in special:
          continue
        if whole_word and pieces[t] and words and words[-1][-1] == i - 1:
          words[-1].append(i)
        else:
          words.append([i])
      maskable = sum(map(len, words))
      n = min(cap, max(1, round(maskable * rate)))
      score = [uniform[r, k if whole_word else w[0]] for k, w in enumerate(words)]
      want = []
      for k in sorted(range(len(words)), key=lambda k: score[k]):
        if len(want) + len(words[k]) > n:
          break
        want += words[k]
      got = out['mlm_positions'][r][out['mlm_weights'][r] > 0]
      assert list(got) == want, (whole_word, r)


def test_word_encoder_matches_the_tokenizer(tokenizer):
  """The synthetic source's word-by-word encoding gives the tokenizer's own
  ids; a tokenizer that does not split at spaces first (byte-level BPE marks
  a word's leading space) is left to encode whole texts."""
  tok, _ = tokenizer
  sentences = [s.text for i in range(100) for s in synthetic.document(5, i)]
  encode = sources.word_encoder(tok)
  backend = tok.backend_tokenizer
  for text in sentences:
    assert encode(text) == backend.encode(text, add_special_tokens=False).ids
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.train_from_iterator(sentences, tokenizers.trainers.BpeTrainer(
      vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  byte_level = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe)
  encode = sources.word_encoder(byte_level)
  for text in sentences[:50]:
    assert encode(text) == bpe.encode(text, add_special_tokens=False).ids
  # Word by word, byte-level BPE would lose the spaces: the check above can fail.
  words = [i for w in sentences[0].split(' ') for i in bpe.encode(w).ids]
  assert words != bpe.encode(sentences[0]).ids
