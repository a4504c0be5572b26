"""The run's tokenizer: a WordPiece vocabulary fitted on the corpus, or an HF one.

`data.tokenizer='train'` fits a lower-cased BERT WordPiece vocabulary of
`data.vocab_size` on the first `data.tokenizer_docs` training documents of
`data.source`; any other value is an HF tokenizer folder or Hub name. The
same fitting runs on its own, to prepare a vocabulary once for many runs:

  python -m sctd_jax.data.tokenizer --source 'files:corpus/*.txt' --out DIR \
      --vocab_size 30522

and a run then takes `--config.data.tokenizer=DIR`. Special-token ids always
come from the tokenizer, never from constants.
"""

import collections
import itertools
import os

from absl import flags
from absl import logging
import tokenizers
import transformers

from sctd_jax import cli
from sctd_jax import config as config_lib
from sctd_jax.data import sources

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def count_words(texts, wordpiece: tokenizers.Tokenizer) -> collections.Counter:
  """How often each word occurs after BERT's normalizer and pre-tokenizer."""
  normalize, split = wordpiece.normalizer.normalize_str, wordpiece.pre_tokenizer.pre_tokenize_str
  counts = collections.Counter()
  for text in texts:
    counts.update(word for word, _ in split(normalize(text)))
  return counts


def fit_vocabulary(counts: collections.Counter, vocab_size: int) -> list[str]:
  """WordPiece tokens of `counts`, as HF's WordPiece trainer picks them, but
  the same in every process.

  HF's trainer is BPE over characters with a '##' prefix on the ones that
  continue a word; it numbers those '##c' in the order of a hash map, and
  breaks ties between equally frequent pairs by number, so two processes
  pick different merges (and orders) from one corpus. Here every continuing
  character is renamed to its own unused code point first, so the BPE
  trainer's alphabet (numbered in code-point order) holds all the symbols
  and no tie depends on hashing; the names are mapped back afterwards."""
  chars = sorted({c for word in counts for c in word})
  continuing = sorted({c for word in counts for c in word[1:]})
  used = set(chars)
  pool = (chr(p) for p in itertools.chain(range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
          if chr(p) not in used)
  rename = dict(zip(continuing, pool))
  if len(rename) < len(continuing):
    raise config_lib.ConfigError('data.tokenizer: the corpus uses too many distinct '
                                 'characters to fit a WordPiece vocabulary.')
  back = {v: k for k, v in rename.items()}
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=1, special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=chars, show_progress=False)
  words = ((word[0] + ''.join(rename[c] for c in word[1:]), n) for word, n in sorted(counts.items()))
  bpe.train_from_iterator((' '.join([w] * n) for w, n in words), trainer=trainer)
  vocab = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
  return [('##' if t[0] in back else '') + ''.join(back.get(c, c) for c in t) for t, _ in vocab]


def fit_tokenizer(texts, vocab_size: int) -> transformers.PreTrainedTokenizerBase:
  """A lower-cased BERT WordPiece tokenizer fitted on `texts`: the same files
  for the same texts and size, whatever the process (`fit_vocabulary`)."""
  wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
  tokens = fit_vocabulary(count_words(texts, wordpiece._tokenizer), vocab_size)  # pylint: disable=protected-access
  wordpiece = tokenizers.BertWordPieceTokenizer({t: i for i, t in enumerate(tokens)},
                                                lowercase=True)
  return transformers.BertTokenizerFast(tokenizer_object=wordpiece._tokenizer)  # pylint: disable=protected-access


def fit_on_corpus(data, seed: int) -> transformers.PreTrainedTokenizerBase:
  """Fitted on the first `data.tokenizer_docs` (-1: all) training documents
  of `data.source` (or `data.sources`)."""
  texts = sources.texts(data, seed)
  if data.tokenizer_docs == -1 and 'synthetic' in (data.sources or data.source):
    raise config_lib.ConfigError('config key data.tokenizer_docs=-1 (all) cannot be '
                                 'used with the endless synthetic corpus.')
  if data.tokenizer_docs != -1:
    texts = itertools.islice(texts, data.tokenizer_docs)
  tokenizer = fit_tokenizer(texts, data.vocab_size)
  if len(tokenizer) <= len(tokenizer.all_special_tokens):  # Before anything is saved.
    key = 'data.sources' if data.sources else 'data.source'
    raise config_lib.ConfigError(
        f'config key {key}={data.sources or data.source!r}: its training documents '
        'have no text to fit a vocabulary on; check the corpus and data.text_column.')
  logging.info('Fitted a WordPiece vocabulary of %d tokens on %s.', len(tokenizer),
               data.sources or data.source)
  return tokenizer


def load(name_or_path: str, key: str) -> transformers.PreTrainedTokenizerBase:
  """An HF tokenizer; an error names the config `key` that asked for it."""
  try:
    return transformers.AutoTokenizer.from_pretrained(name_or_path)
  except (OSError, ValueError) as e:
    raise config_lib.ConfigError(
        f'config key {key}={name_or_path!r}: no tokenizer could be loaded ({e}).') from e


def load_or_fit_tokenizer(config, workdir: str) -> transformers.PreTrainedTokenizerBase:
  """The run's tokenizer, saved in `workdir/tokenizer/` so a resumed run (and
  the export) reuses it: that folder if present, else the `init_from`
  model's (its weights need its vocabulary), else `data.tokenizer`."""
  path = os.path.join(workdir, 'tokenizer')
  if os.path.isdir(path):
    return load(path, 'workdir tokenizer')
  if config.init_from:
    tokenizer = load(config.init_from, 'init_from')
  elif config.data.tokenizer == 'train':
    tokenizer = fit_on_corpus(config.data, config.seed)
  else:
    tokenizer = load(config.data.tokenizer, 'data.tokenizer')
  special_ids(tokenizer)  # Refused before it is saved as the run's.
  tokenizer.save_pretrained(path)
  return tokenizer


def special_ids(tokenizer) -> tuple[list[int], list[int]]:
  """(allow, deny) lists of the importance table, from the tokenizer."""
  missing = [name for name in ('cls_token', 'sep_token', 'mask_token', 'pad_token')
             if getattr(tokenizer, name) is None]
  if missing:
    raise config_lib.ConfigError(
        f'config key data.tokenizer: the tokenizer has no {", ".join(missing)}; '
        'BERT-style pretraining needs [CLS], [SEP], [MASK] and [PAD].')
  return ([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id],
          [tokenizer.pad_token_id])


def define_flags() -> None:
  # The defaults are a run's, so the CLI fits the vocabulary a run would.
  data = config_lib.base_config().data
  flags.DEFINE_string('source', None, 'Corpus, as data.source.')
  flags.DEFINE_string('out', None, 'Folder to save the tokenizer in.')
  flags.DEFINE_integer('vocab_size', data.vocab_size, 'As data.vocab_size.')
  flags.DEFINE_integer('tokenizer_docs', data.tokenizer_docs,
                       'As data.tokenizer_docs: documents to fit on; -1: all.')
  flags.DEFINE_string('text_column', data.text_column, 'As data.text_column.')
  flags.DEFINE_float('validation_fraction', data.validation_fraction,
                     'As data.validation_fraction: the last documents, not fitted on.')
  flags.DEFINE_bool('streaming', data.streaming, 'As data.streaming.')
  flags.DEFINE_integer('seed', 0, 'Seed of the synthetic corpus.')


def main(argv):
  del argv
  args = flags.FLAGS
  cli.output_dir(args.out, '--out', cli.TOKENIZER)
  data = config_lib.base_config().data
  data.update(source=args.source, vocab_size=args.vocab_size,
              tokenizer_docs=args.tokenizer_docs, text_column=args.text_column,
              validation_fraction=args.validation_fraction, streaming=args.streaming)
  tokenizer = fit_on_corpus(data, args.seed)
  special_ids(tokenizer)
  tokenizer.save_pretrained(args.out)
  print(f'Saved a tokenizer of {len(tokenizer)} tokens to {args.out}.')


if __name__ == '__main__':
  define_flags()
  cli.run(main, required=['source', 'out'])
