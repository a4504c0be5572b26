"""Tokenizer, packing and dynamic masking for the built-in corpus.

All per-example randomness runs in NumPy on the host (DESIGN.md section 6):
batch `n` of a split is a pure function of (seed, split, n), so the iterator's
state is the global sample position and resuming needs nothing else.
"""

import itertools
import os
import queue
import threading
from typing import Iterator

import numpy as np
import tokenizers
import transformers

from sctd_jax import synthetic

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
SPLITS = {'train': 0, 'validation': 1}
# Documents per packed block are drawn from a disjoint index range per block.
_DOCS_PER_BLOCK = 1 << 12


def fit_tokenizer(texts, vocab_size: int) -> transformers.PreTrainedTokenizerBase:
  """A lower-cased BERT WordPiece tokenizer fitted with HF `tokenizers`."""
  wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
  wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1,
                                special_tokens=list(SPECIAL_TOKENS))
  return transformers.BertTokenizerFast(tokenizer_object=wordpiece._tokenizer)


def load_or_fit_tokenizer(config, workdir: str):
  """The run's tokenizer: `workdir/tokenizer/` if present, else fitted on the
  built-in corpus and saved there (so a resumed run reuses it)."""
  path = os.path.join(workdir, 'tokenizer')
  if os.path.isdir(path):
    return transformers.AutoTokenizer.from_pretrained(path)
  texts = (s.text for i in range(config.data.tokenizer_docs)
           for s in synthetic.document(config.seed, i))
  tokenizer = fit_tokenizer(texts, config.data.vocab_size)
  tokenizer.save_pretrained(path)
  return tokenizer


def special_ids(tokenizer) -> tuple[list[int], list[int]]:
  """(allow, deny) lists of the importance table, from the tokenizer."""
  missing = [name for name in ('cls_token', 'sep_token', 'mask_token', 'pad_token')
             if getattr(tokenizer, name) is None]
  if missing:
    raise ValueError(f'The tokenizer has no {", ".join(missing)}; BERT-style '
                     'pretraining needs [CLS], [SEP], [MASK] and [PAD].')
  return ([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id],
          [tokenizer.pad_token_id])


class Masker:
  """BERT's dynamic masking: ~`probability` of the non-special tokens of each
  sequence, at most `max_predictions`, become targets; of those 80% are
  replaced by [MASK], 10% by a random non-special token, 10% left as is."""

  def __init__(self, tokenizer, probability: float, max_predictions: int):
    self.probability = probability
    self.max_predictions = max_predictions
    self.mask_id = tokenizer.mask_token_id
    self.special = np.asarray(sorted(set(tokenizer.all_special_ids)))
    self.random_ids = np.setdiff1d(np.arange(len(tokenizer)), self.special)

  def __call__(self, input_ids: np.ndarray, rng: np.random.Generator) -> dict:
    batch, num_preds = input_ids.shape[0], self.max_predictions
    maskable = ~np.isin(input_ids, self.special)
    # Random order of the maskable positions; the first n of each row win.
    order = np.argsort(np.where(maskable, rng.random(input_ids.shape), 2.0), axis=1)
    positions = order[:, :num_preds]
    n = np.minimum(num_preds, np.maximum(
        1, np.round(maskable.sum(1) * self.probability).astype(np.int64)))
    n = np.where(maskable.any(1), n, 0)
    weights = np.arange(num_preds)[None, :] < n[:, None]
    positions = np.where(weights, positions, 0)
    rows = np.arange(batch)[:, None]
    labels = np.where(weights, input_ids[rows, positions], 0)

    draw = rng.random((batch, num_preds))
    replaced = np.where(draw < 0.8, self.mask_id,
                        np.where(draw < 0.9, rng.choice(self.random_ids, draw.shape),
                                 labels))
    masked = input_ids.copy()
    masked[rows, positions] = np.where(weights, replaced, masked[rows, positions])
    return dict(input_ids=masked, mlm_positions=positions.astype(np.int32),
                mlm_ids=labels.astype(np.int32),
                mlm_weights=weights.astype(np.float32))


class SyntheticSource:
  """Packed blocks of the built-in corpus: [CLS] sentences... [SEP] [PAD]...

  Whole sentences from consecutive documents fill each block (no NSP, one
  segment, as RoBERTa's FULL-SENTENCES); block j is a pure function of
  (seed, split, j)."""

  def __init__(self, tokenizer, seq_len: int, seed: int, split: str = 'train'):
    self.tokenizer, self.seq_len = tokenizer, seq_len
    self.seed = seed + 1_000_003 * SPLITS[split]

  def block(self, index: int) -> np.ndarray:
    room = self.seq_len - 2
    tokens: list[int] = []
    for doc in range(_DOCS_PER_BLOCK):
      texts = [s.text for s in synthetic.document(self.seed, index * _DOCS_PER_BLOCK + doc)]
      for ids in self.tokenizer(texts, add_special_tokens=False)['input_ids']:
        if len(tokens) + len(ids) > room:
          return self._frame(tokens)
        tokens.extend(ids)
    return self._frame(tokens)

  def _frame(self, tokens: list[int]) -> np.ndarray:
    t = self.tokenizer
    row = np.full(self.seq_len, t.pad_token_id, np.int32)
    row[:len(tokens) + 2] = [t.cls_token_id, *tokens, t.sep_token_id]
    return row


def unigram_entropy(source: SyntheticSource, num_blocks: int = 200) -> float:
  """Entropy (nats) of the token distribution of the packed corpus: the loss
  of a model that ignores context; MLM loss below it is learnt from context."""
  ids = np.concatenate([source.block(i) for i in range(num_blocks)])
  ids = ids[~np.isin(ids, source.tokenizer.all_special_ids)]
  p = np.bincount(ids) / ids.size
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def make_batch(source: SyntheticSource, masker: Masker, batch_size: int,
               position: int, seed: int) -> dict:
  """The batch of global samples `position ... position + batch_size - 1`."""
  ids = np.stack([source.block(position + i) for i in range(batch_size)])
  batch = masker(ids, np.random.default_rng([seed, source.seed, position]))
  batch['attention_mask'] = (ids != source.tokenizer.pad_token_id).astype(np.int32)
  batch['token_type_ids'] = np.zeros_like(ids)
  return batch


def batches(config, tokenizer, split: str = 'train', position: int = 0) -> Iterator[dict]:
  """Batches of `split` from global sample `position` on, built ahead in a
  thread so the accelerator does not wait on the host. The position is the
  iterator's whole state: resuming there continues with the next batch."""
  source = SyntheticSource(tokenizer, config.data.seq_len, config.seed, split)
  masker = Masker(tokenizer, config.data.mlm_probability, config.data.max_predictions)
  size = config.train.batch_size
  make = lambda p: make_batch(source, masker, size, p, config.seed)
  return prefetch(map(make, itertools.count(position, size)), config.data.prefetch)


def prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` in a daemon thread, `size` items ahead; re-raises its errors."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def work():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # Surfaced in the consumer's thread.
      q.put(e)

  threading.Thread(target=work, daemon=True).start()
  while (item := q.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item
