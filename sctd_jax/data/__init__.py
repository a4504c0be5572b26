"""Pretraining data: corpora and packing (sources), readers, the tokenizer,
the built-in synthetic grammar corpus, and batches for the train loop (pipeline)."""
