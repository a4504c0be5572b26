"""Two processes joined by jax.distributed read one local corpus: process 0
tokenizes it, the other waits at a barrier and reuses its cache."""

import json
import os
import socket
import subprocess
import sys

from sctd_jax.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys, time
from sctd_jax import config as config_lib
from sctd_jax import sharding
sharding.maybe_initialize_distributed(120)
import jax
from sctd_jax.data import sources, synthetic, tokenizer
c = config_lib.base_config()
c.data.update(source='files:' + sys.argv[1] + '/*.jsonl', cache_dir=sys.argv[2],
              seq_len=32, validation_fraction=0.1)
texts = [' '.join(s.text for s in synthetic.document(1, i)) for i in range(200)]
tok = tokenizer.fit_tokenizer(texts, 300)  # The same in both: the fit is deterministic.
if jax.process_index() == 0:
  time.sleep(5)  # Without the barrier, process 1 would tokenize first.
source = sources.make_source(c, tok)
print(json.dumps(dict(process=jax.process_index(), blocks=source.num_blocks,
                      first=source.block(0).tolist())))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_process_zero_tokenizes_and_the_other_reuses_its_cache(tmp_path):
  corpus, cache = tmp_path / 'corpus', tmp_path / 'cache'
  corpus.mkdir()
  with open(corpus / 'a.jsonl', 'w') as f:
    for i in range(300):
      f.write(json.dumps({'text': ' '.join(s.text for s in synthetic.document(2, i))}) + '\n')
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-c', SCRIPT, str(corpus), str(cache)], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
  assert [r['process'] for r in results] == [0, 1]
  assert results[0]['blocks'] == results[1]['blocks'] > 0
  assert results[0]['first'] == results[1]['first']
  # Only process 0 ran the tokenizing map (its progress bar); one cache file.
  assert 'Tokenizing' in outputs[0][1] and 'Tokenizing' not in outputs[1][1]
  tokens = [n for _, _, files in os.walk(cache) for n in files if n.startswith('tokens-')]
  assert len(tokens) == 1, tokens
