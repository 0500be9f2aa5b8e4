#!/usr/bin/env bash
# tiny_recipe: re-runs the main steps of how configs/clip.py:tiny was found, one seed each, with
# today's code (exempt from the study time budget and the 3-seed rule; see README.md).
# From a clean clone: bash experiments/tiny_recipe/reproduce.sh   (RUNS=dir to put the runs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
RUNS=${RUNS:-runs/experiments/tiny_recipe}
# Rows: token pooling + causal text at 800 x 256; + mean pooling; + batch 128 x 1,800 steps;
# batch 64 x 4,000 (causal text); the tiny preset today (bidirectional mean-pooled text).
.venv/bin/python -m jaxclr.sweep --config=configs/clip.py:tiny --workdir="$RUNS/steps" --zip \
    --grid model.image.pool=tok,mean,mean,mean,mean --grid train.batch_size=256,256,128,64,64 \
    --grid train.total_steps=800,800,1800,4000,4000 --grid model.text.causal=True,True,True,True,False \
    --grid seed=0,0,0,0,0
mkdir -p experiments/tiny_recipe/results
cp "$RUNS/steps/results.csv" "$RUNS/steps/results.md" experiments/tiny_recipe/results/
