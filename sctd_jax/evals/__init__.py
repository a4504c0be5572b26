"""Evaluation of pretrained models: fine-tuning on GLUE-style tasks, layer-wise
probing, and the report that compares runs."""
