#!/usr/bin/env bash
# TPU=NAME ZONE=ZONE WORKDIR=gs://BUCKET/run launch/tpu_vm.sh [--config.KEY=VALUE ...]
#
# Runs the same command on every host of a Cloud TPU VM slice (JAX finds the
# other hosts itself) and keeps it running unattended, from this machine:
# - the run is started detached on the hosts (setsid nohup), so it survives
#   the ssh session ending; its log is ~/sctd_train.log on each host;
# - a relaunch loop polls the VM: when the run ended without finishing (a
#   preemptible VM was preempted and restarted, a host failed), it starts the
#   same command again, which resumes from the newest checkpoint in WORKDIR.
# With ACCELERATOR_TYPE and VERSION set, a preempted VM that was deleted is
# recreated (--preemptible) and set up with SETUP before the relaunch.
# Install once on all workers, e.g. SETUP='git clone REPO sctd_jax &&
# cd sctd_jax && python3 -m venv .venv && .venv/bin/pip install -e ".[tpu]"'.
set -euo pipefail
TPU=${TPU:?name of the TPU VM}
ZONE=${ZONE:?its zone}
WORKDIR=${WORKDIR:?a gs:// path all hosts can write}
CONFIG=${CONFIG:-configs/bert_large.py}
POLL_S=${POLL_S:-120}
MAX_RELAUNCHES=${MAX_RELAUNCHES:-100}

quoted_args=$(printf ' %q' "$@")
run="cd ~/sctd_jax && source .venv/bin/activate && python -m sctd_jax.train \
  --config $CONFIG --workdir $WORKDIR --config.mesh.data=-1 \
  --config.mesh.fsdp=4 --config.model.dtype=bfloat16$quoted_args"
# Each host records its exit status; the run is over when worker 0 has one.
start="rm -f ~/sctd_status; setsid nohup bash -c '($run) >> ~/sctd_train.log 2>&1; \
  echo \$? > ~/sctd_status' < /dev/null > /dev/null 2>&1 &"

on_tpu() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" "$@"
}
vm_state() {
  gcloud compute tpus tpu-vm describe "$TPU" --zone "$ZONE" \
    --format='value(state)' 2>/dev/null || echo MISSING
}
recreate() {
  if [[ -z ${ACCELERATOR_TYPE:-} || -z ${VERSION:-} ]]; then
    echo "tpu_vm.sh: $TPU is $1; set ACCELERATOR_TYPE and VERSION to recreate it." >&2
    exit 1
  fi
  gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE" --quiet || true
  gcloud compute tpus tpu-vm create "$TPU" --zone "$ZONE" --preemptible \
    --accelerator-type "$ACCELERATOR_TYPE" --version "$VERSION"
  on_tpu --worker=all --command "${SETUP:?commands that install sctd_jax on a new VM}"
}

for ((launch = 0; launch <= MAX_RELAUNCHES; launch++)); do
  state=$(vm_state)
  case $state in
    READY) ;;
    PREEMPTED | TERMINATED | MISSING) recreate "$state" ;;
    *) sleep "$POLL_S"; continue ;;
  esac
  echo "tpu_vm.sh: launch $launch on $TPU" >&2
  on_tpu --worker=all --command "$start"
  while true; do
    sleep "$POLL_S"
    # Empty while the run goes on; 'unreachable' when the VM went away.
    status=$(on_tpu --worker=0 --command 'cat ~/sctd_status 2>/dev/null || true' \
      2>/dev/null || echo unreachable)
    if [[ $status == 0 ]]; then
      # A run stopped by SIGTERM (maintenance, preemption notice) also exits 0.
      if on_tpu --worker=0 --command \
          'tail -n 20 ~/sctd_train.log | grep -q "Stopped by"'; then
        echo "tpu_vm.sh: run stopped by a signal; relaunching." >&2
        break
      fi
      echo "tpu_vm.sh: finished." >&2
      exit 0
    elif [[ -n $status ]]; then
      echo "tpu_vm.sh: run ended ($status); relaunching." >&2
      break
    fi
  done
done
echo "tpu_vm.sh: gave up after $MAX_RELAUNCHES relaunches." >&2
exit 1
