"""Semantic drift (paper Figure 3) against HF's PyTorch BERT, and its limits."""

import jax
import numpy as np
import pytest
import torch
import transformers

from conftest import tiny_config
from sctd_jax import config as config_lib
from sctd_jax.data import synthetic
from sctd_jax.data.tokenizer import fit_tokenizer
from sctd_jax.data.tokenizer import special_ids
from sctd_jax import drift
from sctd_jax.hf import save as export
from sctd_jax import models
from sctd_jax import representations
from sctd_jax import step as step_lib
from sctd_jax import token_drop


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """A random-init tiny BERT, its tokenizer, a drift sample, and the same
  weights as an HF folder."""
  texts = [s.text for d in range(300) for s in synthetic.document(0, d)]
  tokenizer = fit_tokenizer(texts, 300)
  config = tiny_config(**{'model.vocab_size': len(tokenizer), 'data.seq_len': 32,
                          'data.max_predictions': 6, 'drift.sentences': 6})
  model = models.BertForMaskedLM(step_lib.model_config(config, len(tokenizer)))
  params = models.init_params(model, jax.random.PRNGKey(0))
  folder = str(tmp_path_factory.mktemp('hf'))
  export.write_hf_folder(folder, model.cfg, params, tokenizer)
  importance = token_drop.init_importance(len(tokenizer), *special_ids(tokenizer))
  return config, tokenizer, model, params, importance, drift.sample(config, tokenizer), folder


def _with(config, **overrides):
  """A copy of the module's config with `overrides`; the original stays
  as the other tests expect it."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    section, name = key.split('.')
    config[section][name] = value
  return config


def _torch_mean_vectors(folder, ids, mask):
  bert = transformers.BertModel.from_pretrained(folder).eval()
  with torch.no_grad():
    hidden = bert(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
  weights = torch.tensor(mask, dtype=torch.float32)[..., None]
  return ((hidden * weights).sum(1) / weights.sum(1)).numpy()


def _torch_layer(layer, x_q, x_kv, kv_mask):
  """One HF BertLayer in PyTorch with queries x_q and keys/values x_kv (the
  token-dropping cross layer when x_q is the kept subset of x_kv)."""
  sa = layer.attention.self
  heads, hd = sa.num_attention_heads, sa.attention_head_size
  split = lambda t: t.view(t.shape[0], -1, heads, hd).transpose(1, 2)
  q, k, v = split(sa.query(x_q)), split(sa.key(x_kv)), split(sa.value(x_kv))
  scores = q @ k.transpose(-1, -2) / hd ** 0.5
  scores = scores.masked_fill(kv_mask[:, None, None, :] == 0, float('-inf'))
  context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x_q.shape)
  attended = layer.attention.output(context, x_q)
  return layer.output(layer.intermediate(attended), attended)


def _torch_dropped_mean_vectors(folder, ids, mask, kept, first, last):
  """Mean-pooled last layer of the token-dropping forward (layers first..last
  see only the kept tokens, then they are scattered back), in PyTorch."""
  bert = transformers.BertModel.from_pretrained(folder).eval()
  ids, mask, kept = (torch.tensor(np.asarray(a), dtype=torch.long) for a in (ids, mask, kept))
  index = kept[..., None].expand(-1, -1, bert.config.hidden_size)
  kept_mask = torch.gather(mask, 1, kept)
  with torch.no_grad():
    x = bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
    for i, layer in enumerate(bert.encoder.layer):
      if i < first or i > last:
        x = _torch_layer(layer, x, x, mask)
      elif i == first:
        full = x
        x = _torch_layer(layer, torch.gather(x, 1, index), full, mask)
      else:
        x = _torch_layer(layer, x, x, kept_mask)
      if i == last:
        x = full.scatter(1, index, x)
    weights = mask.float()[..., None]
    return ((x * weights).sum(1) / weights.sum(1)).numpy()


def _cosine(a, b):
  return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_sample_is_validation_masked_with_the_targets_put_back(setup):
  config, tokenizer, *_, s, _ = setup
  assert s['input_ids'].shape == (6, 32)
  changed = s['original_ids'] != s['input_ids']
  assert changed.any()
  targets = np.zeros_like(changed)
  np.put_along_axis(targets, s['mlm_positions'], s['mlm_weights'] > 0, axis=1)
  assert not (changed & ~targets).any()  # Only masked targets differ.
  assert (s['input_ids'][changed] == tokenizer.mask_token_id).mean() > 0.5
  # Reproducible, whatever the batch size of the run.
  other = config.copy_and_resolve_references()
  other.train.batch_size = 5
  np.testing.assert_array_equal(drift.sample(other, tokenizer)['original_ids'],
                                s['original_ids'])


def test_model_drift_matches_hf_pytorch(setup):
  config, _, model, params, importance, s, folder = setup
  out = drift.make_model_drift(config, model)(params, importance, s)
  original = _torch_mean_vectors(folder, s['original_ids'], s['attention_mask'])
  masked = _torch_mean_vectors(folder, s['input_ids'], s['attention_mask'])
  expected = _cosine(original, masked).mean()
  assert expected < 0.997, expected  # Masking moved the representation (0.994).
  np.testing.assert_allclose(1 - float(out['drift_masked']), 1 - expected, rtol=1e-3)
  # Dropping moved it too. (Whether further than masking is not a property
  # of this untrained 4-layer model with one kept-only layer: the two are
  # within 2e-4 and their order changes with the masks drawn.)
  assert float(out['drift_dropped']) < 1 - 1e-4


def test_drift_is_one_for_an_uncorrupted_input(setup):
  config, tokenizer, model, params, importance, s, folder = setup
  clean = dict(s, input_ids=s['original_ids'])
  config = _with(config, **{'token_drop.keep_rate': 1.0})  # The full path.
  out = drift.make_model_drift(config, model)(params, importance, clean)
  np.testing.assert_allclose([float(out['drift_masked']), float(out['drift_dropped'])],
                             1.0, atol=1e-5)
  config = _with(config, **{'drift.encoder': folder})
  out = drift.EncoderDrift(config, tokenizer, clean)(params, importance, clean)
  np.testing.assert_allclose([float(out['drift_masked']), float(out['drift_dropped'])],
                             1.0, atol=1e-5)


def test_dropping_half_of_clean_text_matches_pytorch(setup):
  """keep_rate 0.5 on uncorrupted input: the drift is dropping's alone."""
  config, _, model, params, importance, s, folder = setup
  clean = dict(s, input_ids=s['original_ids'])
  out = drift.make_model_drift(config, model)(params, importance, clean)
  kept = drift.kept_indices(importance, clean['input_ids'], 0.5)
  assert np.asarray(kept).shape == (6, 16)
  original = _torch_mean_vectors(folder, s['original_ids'], s['attention_mask'])
  dropped = _torch_dropped_mean_vectors(folder, s['original_ids'], s['attention_mask'],
                                        kept, first=1, last=2)   # 4 layers
  # The vectors themselves: a random-init model's mean vector moves little
  # (cosine ~0.99997), too little for the cosine alone to tell.
  ours = representations.sentence_vectors(model, params, s['original_ids'],
                                          s['token_type_ids'], s['attention_mask'], kept)
  assert np.abs(dropped - original).max() > 1e-2
  np.testing.assert_allclose(ours, dropped, atol=1e-5)
  np.testing.assert_allclose(float(out['drift_masked']), 1.0, atol=1e-5)
  np.testing.assert_allclose(float(out['drift_dropped']), _cosine(original, dropped).mean(),
                             atol=1e-6)


def _torch_text_vectors(folder, texts):
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  enc = tokenizer(texts, padding=True)
  return _torch_mean_vectors(folder, enc['input_ids'], enc['attention_mask'])


def test_encoder_drift_reads_the_corrupted_text(setup, tmp_path):
  config, tokenizer, _, params, importance, s, folder = setup
  config = _with(config, **{'drift.encoder': folder})
  out = drift.EncoderDrift(config, tokenizer, s)(params, importance, s)
  every = s['attention_mask'] > 0
  # Whole words in, the same ids back: the text is what the tokens say.
  texts = drift.texts(tokenizer, s['original_ids'], every, '[MASK]')
  again = tokenizer(texts, padding='max_length', max_length=32)['input_ids']
  np.testing.assert_array_equal(again, s['original_ids'])
  masked = drift.texts(tokenizer, s['input_ids'], every, '[MASK]')
  assert sum(t.count('[MASK]') for t in masked) >= 0.5 * s['mlm_weights'].sum()
  np.testing.assert_allclose(
      float(out['drift_masked']),
      _cosine(_torch_text_vectors(folder, texts), _torch_text_vectors(folder, masked)).mean(),
      atol=1e-5)
  # The dropped text holds only the k = 16 kept positions (all of a short
  # row's): fewer words in all.
  kept = drift.kept_indices(importance, s['input_ids'], config.token_drop.keep_rate)
  keep = np.zeros_like(every)
  np.put_along_axis(keep, np.asarray(kept), True, axis=1)
  dropped = drift.texts(tokenizer, s['input_ids'], keep, '[MASK]')
  assert sum(len(d.split()) for d in dropped) < 0.8 * sum(len(t.split()) for t in masked)
  np.testing.assert_allclose(
      float(out['drift_dropped']),
      _cosine(_torch_text_vectors(folder, texts), _torch_text_vectors(folder, dropped)).mean(),
      atol=1e-5)
  # A sentence-transformers folder's pooling config wins over drift.pooling.
  (tmp_path / '1_Pooling').mkdir()
  (tmp_path / '1_Pooling' / 'config.json').write_text('{"pooling_mode_cls_token": true}')
  assert drift._folder_pooling(str(tmp_path)) == 'cls'
  assert drift._folder_pooling(folder) is None


@pytest.mark.parametrize('key, value, message', [
    ('drift.sentences', -1, 'drift.sentences=-1'),
    ('drift.pooling', 'max', "drift.pooling='max'"),
    ('drift.encoder', '/nonexistent/sbert', "drift.encoder='/nonexistent/sbert'"),
])
def test_bad_drift_keys_are_named(key, value, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace('.', r'\.')):
    config_lib.validate(tiny_config(**{key: value}))


def test_encoder_drift_cuts_every_form_to_the_words_the_encoder_reads(setup, tmp_path):
  """An encoder of 12 positions reads a prefix of each 32-token row: the
  original and its corrupted forms are cut to the same, longest such prefix."""
  config, tokenizer, model, params, importance, s, _ = setup
  import dataclasses
  short = models.BertForMaskedLM(dataclasses.replace(model.cfg, max_position_embeddings=12))
  folder = str(tmp_path / 'short')
  export.write_hf_folder(folder, short.cfg, models.init_params(short, jax.random.PRNGKey(1)),
                         tokenizer)
  config = _with(config, **{'drift.encoder': folder})
  measure = drift.EncoderDrift(config, tokenizer, s)
  window = measure.window
  length = lambda ids, n: len(tokenizer(drift.texts(
      tokenizer, ids[None], np.arange(32)[None] < n, '[MASK]'))['input_ids'][0])
  for row in range(len(window)):
    n = int(window[row].sum())
    assert window[row, :n].all() and 0 < n < int(s['attention_mask'][row].sum())
    for ids in (s['original_ids'][row], s['input_ids'][row]):
      assert length(ids, n) <= 12
    assert max(length(ids, n + 1) for ids in (s['original_ids'][row], s['input_ids'][row])) > 12
  out = measure(params, importance, s)
  cut = lambda ids, keep: drift.texts(tokenizer, ids, keep, '[MASK]')
  np.testing.assert_allclose(
      float(out['drift_masked']),
      _cosine(_torch_text_vectors(folder, cut(s['original_ids'], window)),
              _torch_text_vectors(folder, cut(s['input_ids'], window))).mean(), atol=1e-5)


def test_sentence_sample_holds_single_sentences_of_the_training_text(setup):
  config, tokenizer, *_ = setup
  config = _with(config, **{'drift.text': 'sentences'})
  s = drift.sentence_sample(config, tokenizer)
  assert s['input_ids'].shape == (6, 32)
  training = ' '.join(s.text for d in range(300) for s in synthetic.document(0, d))
  special = set(tokenizer.all_special_ids)
  for row, mask in zip(s['original_ids'], s['attention_mask']):
    words = tokenizer.decode([int(i) for i in row if int(i) not in special])
    assert row[0] == tokenizer.cls_token_id and mask.sum() < 32   # one short sentence
    assert words.rstrip('.!?').count('.') == 0 and words[-1] in '.!?'
    assert words in training.lower()
  assert s['mlm_weights'].sum() > 0
  np.testing.assert_array_equal(drift.sentence_sample(config, tokenizer)['input_ids'],
                                s['input_ids'])   # one seed, one sample
