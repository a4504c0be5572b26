#!/usr/bin/env bash
# Cloud TPU VM pod slice (e.g. v4-32): the same command on every host; JAX
# finds the other hosts itself. Install first on all workers:
#   gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all \
#     --command "git clone REPO sctd_jax && cd sctd_jax && pip install -e . 'jax[tpu]'"
set -euo pipefail
TPU=${TPU:?name of the TPU VM}; ZONE=${ZONE:?its zone}
WORKDIR=${WORKDIR:?a gs:// or shared path all hosts can write}
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd sctd_jax && python -m sctd_jax.train --config configs/bert_large.py \
    --workdir $WORKDIR --config.mesh.data=-1 --config.mesh.fsdp=4 \
    --config.model.dtype=bfloat16"
