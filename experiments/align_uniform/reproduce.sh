#!/usr/bin/env bash
# align_uniform: alignment + uniformity as the objective vs CLIP (Wang & Isola 2020), study preset, 3 seeds.
# From a clean clone: bash experiments/align_uniform/reproduce.sh   (RUNS=dir to put the runs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
STUDY=experiments/align_uniform
RUNS=${RUNS:-runs/$STUDY}
PY=.venv/bin/python
# The grids (pre-registered in study.json).
# objective: CLIP (learned scale) vs alignment + uniformity (weights 1, 1), seeds 0-2.
$PY -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/objective" --zip \
    --grid loss.terms.clip=1,1,1,0,0,0 --grid loss.terms.alignment=0,0,0,1,1,1 \
    --grid loss.terms.uniformity=0,0,0,1,1,1 --grid seed=0,1,2,0,1,2
# grid: CLIP at fixed scales 3 and 30; alignment + w_u uniformity with w_u 0.25 and 4 (the scale is
# unused without a logit term), seeds 0-2.
$PY -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/grid" --zip --config.model.learn_scale=False \
    --grid loss.terms.clip=1,1,1,1,1,1,0,0,0,0,0,0 --grid loss.terms.alignment=0,0,0,0,0,0,1,1,1,1,1,1 \
    --grid loss.terms.uniformity=0,0,0,0,0,0,0.25,0.25,0.25,4,4,4 \
    --grid model.init_scale=3,3,3,30,30,30,10,10,10,10,10,10 --grid seed=0,1,2,0,1,2,0,1,2,0,1,2
$PY -m jaxclr.study "$STUDY" --collect "$RUNS"
