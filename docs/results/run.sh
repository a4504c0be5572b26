#!/usr/bin/env bash
# Makes docs/results/: every variant below pretrained with
# configs/experiment.py under each seed, then probed and fine-tuned on the
# built-in tasks, and compared across seeds by `sctd_jax.evals.seeds`.
# From the repository root:
#   bash docs/results/run.sh [RUNS_DIR]          (default runs/experiment)
# Environment: SEEDS (default "0 1 2 3 4"), JOBS (runs at a time, default 2),
# VARIANTS (default all of them, in the order below), TRAIN_ARGS (more
# --config.KEY=VALUE overrides for every pretraining run, e.g.
# --config.train.num_steps=1500), OUT (where seeds.md and its figures go,
# default docs/results), RECORDS (where each finished run's record goes,
# default OUT/runs), PIN (1: run slot k is
# pinned to core k with taskset, so that concurrent runs' XLA thread pools do
# not share cores; on 2 cores two pinned runs gave 16% more steps/s than one
# run on both).
# A run's folder is RUNS_DIR/seedS/VARIANT. Each step resumes or is skipped
# when its output exists, so rerunning after an interruption continues where
# it stopped. Each run's wall and CPU seconds go to its folder's time.txt.
# A finished run's record (config, metrics, time, probe and fine-tuning
# results: what `sctd_jax.evals.seeds` reads, no checkpoints; and the
# machine it ran on) is copied to
# RECORDS/seedS/VARIANT, and a run with a record is skipped: commit RECORDS
# as runs finish, and the sweep survives the loss of RUNS_DIR's machine.
# A record is found by seed and variant alone: a sweep with other
# TRAIN_ARGS needs its own OUT (or RECORDS), or it would skip the runs
# recorded with the defaults and add its own among them.
set -euo pipefail
RUNS=${1:-runs/experiment}
SEEDS=${SEEDS:-"0 1 2 3 4"}
JOBS=${JOBS:-2}
PIN=${PIN:-0}
TRAIN_ARGS=${TRAIN_ARGS:-}
OUT=${OUT:-docs/results}
RECORDS=${RECORDS:-$OUT/runs}
# XLA:CPU's step allocates its ~200 MB of temporaries afresh each step, and
# glibc maps them in 4 KiB pages: in short runs a fifth of the CPU went to
# page faults. Transparent huge pages for glibc's mapped chunks (glibc >=
# 2.35; ignored before) cut that (docs/performance.md).
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}

# name: the overrides that make it. The first three are the paper's methods;
# the rest are SCTD's objective variants (docs/evaluation.md).
declare -A OVERRIDES=(
  [baseline]="--config.method=baseline"
  [token_drop]="--config.method=token_drop"
  [sctd]="--config.method=sctd"
  [sctd_masked_tokens]="--config.method=sctd --config.sctd.kl_normalizer=masked_tokens"
  [sctd_released]="--config.method=sctd --config.sctd.objective=released"
  [sctd_stop_grad]="--config.method=sctd --config.sctd.stop_grad_teacher=true"
)
VARIANTS=${VARIANTS:-"baseline token_drop sctd sctd_masked_tokens sctd_released sctd_stop_grad"}
TASKS="tense subj_num paraphrase"

# One run: pretraining, probing, then one fine-tuning per built-in task, all
# with the run's seed; it stops at the first step that fails (`|| return`:
# errexit does not hold in a function called on the left of `||`).
one_run() {
  local seed=$1 variant=$2 slot=$3 dir=$RUNS/seed$1/$2
  local -a timed=(/usr/bin/time -a -o "$dir/time.txt" -f "%e %U %S")
  if [ "$PIN" = 1 ]; then timed=(taskset -c "$slot" "${timed[@]}"); fi
  mkdir -p "$dir"
  # shellcheck disable=SC2086  # OVERRIDES, TRAIN_ARGS: several words on purpose.
  "${timed[@]}" python -m sctd_jax.train --config configs/experiment.py --workdir "$dir" \
    --config.seed="$seed" --config.data.tokenizer="$RUNS/seed$seed/tokenizer" \
    ${OVERRIDES[$variant]} $TRAIN_ARGS || return 1
  finished "$dir" || return 1
  [ -f "$dir/probe/probe.json" ] || \
    "${timed[@]}" python -m sctd_jax.evals.probe --init "$dir" --out "$dir/probe" || return 1
  local task
  for task in $TASKS; do
    [ -f "$dir/finetune/$task/eval_results.json" ] || \
      "${timed[@]}" python -m sctd_jax.evals.finetune --config configs/finetune.py \
        --workdir "$dir/finetune/$task" --config.init="$dir" --config.task="$task" \
        --config.seed="$seed" --config.data.max_length=64 || return 1
  done
  record "$dir" "$RECORDS/seed$seed/$variant"
}

# Training stopped by a signal saves and exits 0 (a preemption is not a
# failure), so a run goes on to its evaluations only once its metrics reach
# train.num_steps.
finished() {
  python -c 'import json, sys
steps = max(json.loads(line)["step"] for line in open(sys.argv[1] + "/metrics.jsonl"))
want = json.load(open(sys.argv[1] + "/config.json"))["train"]["num_steps"]
sys.exit(steps != want and f"{sys.argv[1]} stopped at step {steps} of {want}; rerun to resume")' "$1"
}

# Copies a finished run's record; written beside and renamed, so a record
# that exists is whole, and a failed copy leaves nothing.
record() {
  local dir=$1 to=$2 file task
  rm -rf "$to.partial"
  for file in config.json metrics.jsonl time.txt probe/probe.json \
      $(for task in $TASKS; do echo "finetune/$task/eval_results.json"; done); do
    mkdir -p "$(dirname "$to.partial/$file")" && cp "$dir/$file" "$to.partial/$file" ||
      { rm -rf "$to.partial"; return 1; }
  done
  # Runs of one sweep may come from several machines (CPU time differs).
  echo "$(uname -m), $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)," \
    "recorded $(date -u '+%F %H:%M UTC')" > "$to.partial/machine.txt" &&
    mv -T "$to.partial" "$to" || { rm -rf "$to.partial"; return 1; }
}

# The seed fixes the corpus, its held-out split and (fits are deterministic)
# the tokenizer, which all of a seed's variants share.
for seed in $SEEDS; do
  [ -f "$RUNS/seed$seed/tokenizer/tokenizer.json" ] || python -m sctd_jax.data.tokenizer \
    --source synthetic --out "$RUNS/seed$seed/tokenizer" --vocab_size 1024 \
    --tokenizer_docs 2000 --seed "$seed"
done

# The paper's methods first, then the variants, each group seed-major so
# that whole seeds finish first; JOBS runs at a time. A failed run names its
# log and fails the script once the others are done.
order() {
  local group seed v
  for group in "baseline token_drop sctd" "sctd_masked_tokens sctd_released sctd_stop_grad"; do
    for seed in $SEEDS; do
      for v in $group; do
        if [[ " $VARIANTS " == *" $v "* ]]; then echo "$seed $v"; fi
      done
    done
  done
}
# A slot is free once its last run has exited. A failed run is written down
# in failed.txt rather than taken from `wait`, which reports each exit once.
declare -a slot_pid=()
free_slot() {
  local s
  for ((s = 0; s < JOBS; s++)); do
    if [ -z "${slot_pid[s]:-}" ] || ! kill -0 "${slot_pid[s]}" 2>/dev/null; then
      echo "$s"; return 0
    fi
  done
  return 1
}
mkdir -p "$RUNS"
rm -f "$RUNS/failed.txt"
while read -r seed variant; do
  if [ -d "$RECORDS/seed$seed/$variant" ]; then
    echo "seed $seed $variant: recorded in $RECORDS, skipped"; continue
  fi
  while ! slot=$(free_slot); do wait -n || true; done
  mkdir -p "$RUNS/seed$seed"
  log=$RUNS/seed$seed/$variant.log
  echo "$(date -u +%H:%M) seed $seed $variant -> $log (slot $slot)"
  (one_run "$seed" "$variant" "$slot" >> "$log" 2>&1 ||
     { echo "error: seed $seed $variant failed; see $log" | tee -a "$RUNS/failed.txt" >&2; }) &
  slot_pid[slot]=$!
done < <(order)
wait
[ ! -f "$RUNS/failed.txt" ] || exit 1

# The runs above shared the machine; the benchmark times each method's step
# alone, back to back, for the comparisons at equal time.
[ -f docs/results/bench.json ] || python -m sctd_jax.bench --config configs/experiment.py \
  --config.model.vocab_size=1024 --hf=false --json docs/results/bench.json

# shellcheck disable=SC2086
python -m sctd_jax.evals.seeds "$RECORDS" --variants ${VARIANTS// /,} \
  --bench docs/results/bench.json --out "$OUT"
