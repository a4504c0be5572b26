"""The CPU-scale comparison of baseline, token dropping and SCTD in
docs/results/ (made by docs/results/run.sh): configs/tiny.py's model made 6
layers deep, so that token dropping skips 2 of them (full 0-1, cross 2,
kept-only 3-4, full 5), trained on the built-in corpus long enough for the
validation curves to settle. At 1500 steps they had not: the loss plateaus
near 4.9 until about step 900, then falls steeply, and in the last 20% of
the steps it still fell 0.62 nats for the baseline and 0.30 for token
dropping (seeds 0 and 1, docs/results/README.md), so final losses measured
when each method's fall happened. Lower or higher learning rates, or half
the batch for twice the steps, did not move the fall earlier in tokens;
3000 steps give it as many tokens again to finish. Layers are not scanned:
at 6 layers the compile is short and the unrolled step is ~8% faster on CPU
(bench, docs/performance.md).

python -m sctd_jax.train --config configs/experiment.py --workdir runs/sctd --config.method=sctd
"""

from sctd_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.model.update(hidden_size=128, num_layers=6, num_heads=4,
                 intermediate_size=512, max_position_embeddings=128,
                 dropout_rate=0.0, attention_dropout_rate=0.0,
                 scan_layers=False)
  c.train.update(num_steps=3000, batch_size=32, learning_rate=1.5e-3,
                 warmup_steps=150, log_every=20, eval_every=100,
                 checkpoint_every=500)
  c.data.update(seq_len=64, max_predictions=12, vocab_size=1024,
                tokenizer_docs=2000)
  return c
