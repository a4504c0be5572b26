"""A small BERT that pretrains with SCTD on 2 CPU cores in a few minutes.

python -m sctd_jax.train --config configs/tiny.py --workdir runs/tiny
"""

from sctd_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.model.update(hidden_size=128, num_layers=4, num_heads=4,
                 intermediate_size=512, max_position_embeddings=128)
  c.train.update(num_steps=600, batch_size=32, learning_rate=1e-3,
                 warmup_steps=60, log_every=10, eval_every=200,
                 checkpoint_every=200)
  c.data.update(seq_len=64, max_predictions=12, vocab_size=1024,
                tokenizer_docs=2000)
  return c
