"""One seed is one run: the fitted tokenizer, and so the whole run, is the
same in every fresh process (Rust's hash maps are seeded per process)."""

import json
import os
import subprocess
import sys

from sctd_jax.data import tokenizer as tokenizer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough to compile fast, large enough that HF's own trainer picks
# another vocabulary in two processes about half the time.
TINY = ['--config.model.hidden_size=32', '--config.model.num_heads=2',
        '--config.model.intermediate_size=64', '--config.model.num_layers=4',
        '--config.data.seq_len=32', '--config.data.max_predictions=5',
        '--config.data.vocab_size=1024', '--config.data.tokenizer_docs=2000',
        '--config.train.batch_size=4', '--config.train.num_steps=3', '--config.train.warmup_steps=1',
        '--config.train.log_every=1', '--config.train.eval_every=3',
        '--config.train.eval_batches=1', '--config.drift.sentences=0',
        '--config.sctd.fi=2']


def _start(workdir, seed):
  env = dict(os.environ, PYTHONHASHSEED=str(seed))
  return subprocess.Popen(
      [sys.executable, '-m', 'sctd_jax.train', '--config', 'configs/tiny.py',
       '--workdir', str(workdir), *TINY], cwd=ROOT, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_fresh_runs_have_the_same_tokenizer_and_losses(tmp_path):
  # Both at once (2 cores), with different hash seeds, nothing shared.
  runs = [_start(tmp_path / name, seed) for name, seed in (('a', 1), ('b', 2))]
  for run in runs:
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
  names = sorted(os.listdir(tmp_path / 'a' / 'tokenizer'))
  assert 'tokenizer.json' in names and names == sorted(os.listdir(tmp_path / 'b' / 'tokenizer'))
  for name in names:
    a, b = ((tmp_path / run / 'tokenizer' / name).read_bytes() for run in 'ab')
    assert a == b, name
  rows = [[json.loads(line) for line in open(tmp_path / run / 'metrics.jsonl')] for run in 'ab']
  assert [r['step'] for r in rows[0]] == [1, 2, 3]
  for key in ('loss', 'mlm_drop', 'grad_norm', 'val_mlm_full'):
    assert any(r.get(key) is not None for r in rows[0]), f'{key}: none in either run'
    assert [r.get(key) for r in rows[0]] == [r.get(key) for r in rows[1]], key
  # The host's wait for each next batch is logged (not equal: it is timing).
  assert all(0 <= r['data_wait_s'] < r['step_time_s'] + 60 for r in rows[0])


FIT = """
import sys
from sctd_jax.data import tokenizer
from sctd_jax.data import synthetic
texts = (' '.join(s.text for s in synthetic.document(3, i)) for i in range(1500))
print(tokenizer.fit_tokenizer(texts, 900).backend_tokenizer.to_str())
"""


def test_fit_is_byte_identical_across_processes_and_a_wordpiece_vocabulary():
  outs = [subprocess.run([sys.executable, '-c', FIT], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONHASHSEED=str(seed)))
          for seed in (5, 6)]
  assert outs[0].returncode == 0, outs[0].stderr[-2000:]
  assert outs[0].stdout == outs[1].stdout
  assert len(json.loads(outs[0].stdout)['model']['vocab']) == 900


def test_fit_merges_as_wordpiece_with_ties_to_the_lower_pair():
  # Sennrich et al.'s example, worked by hand: pairs (##e ##s) and (##s ##t)
  # both occur 9 times, (l ##o) and (##o ##w) 7 times; ties go to the pair
  # of lower ids (plain characters, then '##' ones, each by code point).
  text = ' '.join(['low'] * 5 + ['lower'] * 2 + ['newest'] * 6 + ['Widest'] * 3)
  tok = tokenizer_lib.fit_tokenizer([text], vocab_size=27)
  vocab = tok.get_vocab()
  assert sorted(vocab, key=vocab.get) == [
      *tokenizer_lib.SPECIAL_TOKENS, *'deilnorstw',
      *('##' + c for c in 'deiorstw'), '##es', '##est', 'lo', 'low']
  assert tok.tokenize('Lowest wider') == ['low', '##est', 'w', '##i', '##d', '##e', '##r']
