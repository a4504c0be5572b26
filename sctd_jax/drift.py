"""Semantic drift during training (paper section 2, Figure 3).

For a fixed sample of validation sequences, the cosine similarity between the
sentence representation of the original input and of its corrupted forms:
`drift_masked` (BERT's masking, what the baseline sees) and, unless the
method is the baseline, `drift_dropped` (masking, then the tokens the current
importance table drops, what token dropping sees). 1.0 is no drift.

The representation comes from the model being trained (`drift.encoder=''`:
its last layer pooled, the dropped form through the token-dropping forward)
or from a fixed sentence encoder folder, as the paper used SentenceBERT (a
sentence-transformers or HF folder, run with PyTorch, fed the decoded text;
the dropped form leaves the dropped tokens out of the text). Every form of a
row is cut to the words the encoder reads whole, so none is compared over
other words than the original.
"""

import itertools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from sctd_jax import config as config_lib
from sctd_jax.data import pipeline
from sctd_jax.data import sources
from sctd_jax import representations
from sctd_jax import token_drop


def sample(config, tokenizer) -> dict:
  """The first `drift.sentences` validation rows, masked as in validation, with
  `original_ids` (the masked targets put back). Built as one process would, so
  every process of a multi-host run holds the same sample."""
  n = config.drift.sentences
  rows = pipeline.batches(config, tokenizer, 'validation', 0,
                                process_index=0, process_count=1)
  parts = []
  while sum(len(p['input_ids']) for p in parts) < n:
    parts.append(next(rows))
  batch = {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
  original = batch['input_ids'].copy()
  r, c = np.nonzero(batch['mlm_weights'])
  original[r, batch['mlm_positions'][r, c]] = batch['mlm_ids'][r, c]
  return dict(batch, original_ids=original)


SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def sentence_sample(config, tokenizer, pool: int = 20) -> dict:
  """`drift.sentences` single sentences of the training documents, as the
  paper sampled them: drawn (by `seed`) from the first `pool` times as many
  sentences of at least 4 words, each a padded row of `data.seq_len`, masked
  as in training, with `original_ids`."""
  n = config.drift.sentences
  candidates = (sentence for text in sources.texts(config.data, config.seed)
                for sentence in SENTENCE_END.split(text.strip())
                if len(sentence.split()) >= 4)
  candidates = list(itertools.islice(candidates, pool * n))
  rng = np.random.default_rng(config.seed)
  chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), n, replace=False))]
  frame = sources.framer(tokenizer, config.data.seq_len)
  ids = np.stack([frame(e.ids[:config.data.seq_len - 2]) for e in
                  tokenizer.backend_tokenizer.encode_batch(chosen, add_special_tokens=False)])
  d = config.data
  masker = pipeline.Masker(tokenizer, d.mlm_probability, d.max_predictions,
                           d.whole_word_masking)
  batch = masker(ids, [[config.seed, i] for i in range(n)])
  return dict(batch, original_ids=ids, token_type_ids=np.zeros_like(ids),
              attention_mask=(ids != tokenizer.pad_token_id).astype(np.int32))


def kept_indices(importance, input_ids, keep_rate: float):
  """The positions token dropping keeps, chosen as in validation."""
  k = token_drop.keep_count(input_ids.shape[1], keep_rate)
  return token_drop.select_kept(importance, input_ids, k, jax.random.PRNGKey(0))


def make_model_drift(config, model):
  """(params, importance, sample) -> {'drift_masked', ['drift_dropped']}, jitted."""
  pooling, dropping = config.drift.pooling, config.method != 'baseline'

  def drift(params, importance, s):
    vectors = lambda ids, kept=None: representations.sentence_vectors(
        model, params, ids, s['token_type_ids'], s['attention_mask'], kept, pooling)
    original = vectors(s['original_ids'])
    out = {'drift_masked': jnp.mean(representations.cosine(
        original, vectors(s['input_ids'])))}
    if dropping:
      kept = kept_indices(importance, s['input_ids'], config.token_drop.keep_rate)
      out['drift_dropped'] = jnp.mean(representations.cosine(
          original, vectors(s['input_ids'], kept)))
    return out

  return jax.jit(drift)


class SentenceEncoder:
  """A fixed sentence encoder folder (sentence-transformers or HF), in PyTorch.

  Pooling follows the folder's `1_Pooling/config.json` when it has one (as
  sentence-transformers does), else `pooling`."""

  def __init__(self, folder: str, pooling: str):
    try:
      import torch
    except ImportError:
      raise config_lib.ConfigError(
          f'config key drift.encoder={folder!r} runs the encoder with PyTorch, '
          "which is not installed: pip install torch (or set drift.encoder='' "
          'to use the model being trained).') from None
    import transformers
    if not os.path.isfile(os.path.join(folder, 'config.json')):
      raise config_lib.ConfigError(
          f'config key drift.encoder={folder!r} is not a model folder (no '
          'config.json); give a sentence-transformers or HF encoder folder.')
    self.torch = torch
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    self.model = transformers.AutoModel.from_pretrained(folder).eval()
    self.pooling = _folder_pooling(folder) or pooling
    # Longest input the encoder reads whole (its tokenizer may claim more).
    self.max_tokens = min(self.tokenizer.model_max_length,
                          self.model.config.max_position_embeddings)

  def fits(self, text: str) -> bool:
    return len(self.tokenizer(text)['input_ids']) <= self.max_tokens

  def __call__(self, texts: list[str]) -> np.ndarray:
    enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors='pt')
    with self.torch.no_grad():
      hidden = self.model(**enc).last_hidden_state
    return np.asarray(representations.pool(
        jnp.asarray(hidden.numpy()), jnp.asarray(enc['attention_mask'].numpy()),
        self.pooling))


def _folder_pooling(folder: str) -> str | None:
  path = os.path.join(folder, '1_Pooling', 'config.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    modes = json.load(f)
  return 'cls' if modes.get('pooling_mode_cls_token') else 'mean'


def texts(tokenizer, ids: np.ndarray, keep: np.ndarray, mask_token: str) -> list[str]:
  """The rows of `ids` as text, positions where `keep` is False left out, our
  [MASK] written as the encoder's mask token."""
  special = set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}
  out = []
  for row, kept in zip(ids, keep):
    tokens = [mask_token if i == tokenizer.mask_token_id
              else tokenizer.convert_ids_to_tokens(int(i))
              for i, k in zip(row, kept) if k and int(i) not in special]
    out.append(tokenizer.convert_tokens_to_string(tokens))
  return out


class EncoderDrift:
  """Drift as a fixed encoder sees it: only the corruption changes over
  training (the dropped tokens follow the importance table)."""

  def __init__(self, config, tokenizer, s: dict):
    self.encoder = SentenceEncoder(config.drift.encoder, config.drift.pooling)
    self.tokenizer, self.sample = tokenizer, s
    self.keep_rate, self.dropping = config.token_drop.keep_rate, config.method != 'baseline'
    mask_token = self.encoder.tokenizer.mask_token or self.encoder.tokenizer.unk_token
    self.text = lambda ids, keep: texts(tokenizer, ids, keep, mask_token)
    self.window = self.covered(s)
    self.original = self.encoder(self.text(s['original_ids'], self.window))
    self.masked = self.encoder(self.text(s['input_ids'], self.window))

  def covered(self, s: dict) -> np.ndarray:
    """[N, S] bool: each row's longest prefix whose original and masked texts
    the encoder reads without truncation. Every form is cut to it, so the
    original and corrupted texts cover the same words (a truncating encoder
    would otherwise compare the original's first words with later ones of a
    shorter, dropped text)."""
    positions = np.arange(s['input_ids'].shape[1])
    window = np.zeros_like(s['input_ids'], bool)
    for row in range(len(window)):
      fits = lambda n: all(self.encoder.fits(self.text(ids[row:row + 1], positions[None] < n)[0])
                           for ids in (s['original_ids'], s['input_ids']))
      low, high = 0, len(positions)   # fits(low); the answer is in [low, high].
      while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
      window[row, :low] = True
    return window

  def __call__(self, params, importance, s) -> dict:
    del params  # The encoder is fixed.
    cos = lambda v: jnp.mean(representations.cosine(jnp.asarray(self.original), v))
    out = {'drift_masked': cos(self.masked)}
    if self.dropping:
      # Replicated, so every process holds the whole table.
      importance = np.asarray(importance.addressable_data(0))
      kept = np.asarray(kept_indices(importance, s['input_ids'], self.keep_rate))
      keep = np.zeros_like(s['input_ids'], bool)
      np.put_along_axis(keep, kept, True, axis=1)
      out['drift_dropped'] = cos(self.encoder(self.text(s['input_ids'], keep & self.window)))
    return out


def make_drift(config, model, tokenizer):
  """state -> {'drift_masked', ['drift_dropped']} as floats, or None when
  `drift.sentences` is 0."""
  if config.drift.sentences == 0:
    return None
  s = (sentence_sample if config.drift.text == 'sentences' else sample)(config, tokenizer)
  measure = (EncoderDrift(config, tokenizer, s) if config.drift.encoder
             else make_model_drift(config, model))

  def drift(state) -> dict:
    return {k: float(v) for k, v in measure(state.params, state.importance, s).items()}

  return drift
