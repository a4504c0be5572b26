#!/usr/bin/env bash
# Makes docs/results/: baseline, token dropping and SCTD pretrained on the
# built-in corpus with configs/experiment.py, then probed, fine-tuned on the
# built-in tasks and compared. From the repository root:
#   bash docs/results/run.sh [RUNS_DIR]     (default runs/experiment)
# Each step resumes or is skipped when its output exists, so rerunning after
# an interruption continues where it stopped.
set -euo pipefail
RUNS=${1:-runs/experiment}
METHODS="baseline token_drop sctd"
mkdir -p "$RUNS"

# Waits for the background jobs whose pids and logs are in PIDS and LOGS, and
# fails naming every one that failed: a bare `wait` returns 0 whatever the
# jobs returned.
wait_all() {
  local failed=0 i
  for i in "${!PIDS[@]}"; do
    if ! wait "${PIDS[$i]}"; then
      echo "error: a job failed; see ${LOGS[$i]}" >&2
      failed=1
    fi
  done
  PIDS=() LOGS=()
  return "$failed"
}
PIDS=() LOGS=()

# One tokenizer for all three, so they differ only in the method.
[ -f "$RUNS/tokenizer/tokenizer.json" ] || python -m sctd_jax.data.tokenizer \
  --source synthetic --out "$RUNS/tokenizer" --vocab_size 1024 --tokenizer_docs 2000

# The three pretraining runs side by side, so they share the machine alike
# and their step times compare. A finished run only reloads.
for m in $METHODS; do
  python -m sctd_jax.train --config configs/experiment.py --workdir "$RUNS/$m" \
    --config.method="$m" --config.data.tokenizer="$RUNS/tokenizer" \
    >> "$RUNS/$m.log" 2>&1 &
  PIDS+=($!) LOGS+=("$RUNS/$m.log")
done
wait_all

# Probing and fine-tuning of each run, the three side by side. The built-in
# tasks' sentences and pairs fit in 64 tokens.
evaluate() {
  local run=$1
  [ -f "$run/probe/probe.json" ] || python -m sctd_jax.evals.probe --init "$run" --out "$run/probe"
  for task in tense subj_num paraphrase; do
    [ -f "$run/finetune/$task/eval_results.json" ] || \
      python -m sctd_jax.evals.finetune --config configs/finetune.py \
        --workdir "$run/finetune/$task" --config.init="$run" --config.task="$task" \
        --config.num_seeds=3 --config.data.max_length=64
  done
}
for m in $METHODS; do
  evaluate "$RUNS/$m" > "$RUNS/$m.eval.log" 2>&1 &
  PIDS+=($!) LOGS+=("$RUNS/$m.eval.log")
done
wait_all

# The runs above shared the machine with each other; the benchmark times the
# same steps one method at a time, back to back.
[ -f docs/results/bench.json ] || python -m sctd_jax.bench --config configs/experiment.py \
  --config.model.vocab_size=1024 --hf=false --json docs/results/bench.json

python -m sctd_jax.evals.report "$RUNS/baseline" "$RUNS/token_drop" "$RUNS/sctd" \
  --out docs/results
