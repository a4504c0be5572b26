"""A small BERT that pretrains with SCTD on 2 CPU cores in a few minutes.

python -m sctd_jax.train --config configs/tiny.py --workdir runs/tiny
"""

from sctd_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  # A few minutes of training underfits; dropout would only slow learning.
  c.model.update(hidden_size=128, num_layers=4, num_heads=4,
                 intermediate_size=512, max_position_embeddings=128,
                 dropout_rate=0.0, attention_dropout_rate=0.0)
  c.train.update(num_steps=1200, batch_size=32, learning_rate=2e-3,
                 warmup_steps=100, log_every=20, eval_every=200,
                 checkpoint_every=400)
  c.data.update(seq_len=64, max_predictions=12, vocab_size=1024,
                tokenizer_docs=2000)
  return c
