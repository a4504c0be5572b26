#!/usr/bin/env bash
# launch/gpu_single_host.sh --config.data.source=hf:wikimedia/wikipedia:20231101.en
# BERT-base with SCTD on all GPUs of one machine: batch split over devices,
# weights sharded FSDP-style, bfloat16 compute (float32 params, softmax,
# LayerNorm and losses). Raise grad_accum_steps if batch 1024 does not fit.
set -euo pipefail
WORKDIR=${WORKDIR:-runs/bert_base_sctd}
python -m sctd_jax.train --config configs/bert_base.py --workdir "$WORKDIR" \
  --config.method=sctd \
  --config.mesh.data=1 --config.mesh.fsdp=-1 --config.mesh.tensor=1 \
  --config.model.dtype=bfloat16 \
  --config.train.grad_accum_steps=4 \
  "$@"
