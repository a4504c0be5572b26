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

# One tokenizer for all three, so they differ only in the method.
[ -f "$RUNS/tokenizer/tokenizer.json" ] || python -m sctd_jax.tokenizer \
  --source synthetic --out "$RUNS/tokenizer" --vocab_size 1024 --tokenizer_docs 2000

# The three pretraining runs side by side, so they share the machine alike
# and their step times compare.
for m in $METHODS; do
  python -m sctd_jax.train --config configs/experiment.py --workdir "$RUNS/$m" \
    --config.method="$m" --config.data.tokenizer="$RUNS/tokenizer" \
    > "$RUNS/$m.log" 2>&1 &
done
wait

for m in $METHODS; do
  [ -f "$RUNS/$m/probe/probe.json" ] || \
    python -m sctd_jax.probe --init "$RUNS/$m" --out "$RUNS/$m/probe"
  for task in tense subj_num paraphrase; do
    [ -f "$RUNS/$m/finetune/$task/eval_results.json" ] || \
      python -m sctd_jax.finetune --config configs/finetune.py \
        --workdir "$RUNS/$m/finetune/$task" --config.init="$RUNS/$m" \
        --config.task="$task" --config.num_seeds=3
  done
done

python -m sctd_jax.report "$RUNS/baseline" "$RUNS/token_drop" "$RUNS/sctd" \
  --out docs/results
