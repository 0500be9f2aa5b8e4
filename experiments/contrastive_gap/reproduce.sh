#!/usr/bin/env bash
# contrastive_gap: CLIP vs CLIP + uniformity + alignment (Fahim et al. 2024), study preset, 3 seeds.
# From a clean clone: bash experiments/contrastive_gap/reproduce.sh   (RUNS=dir to put the runs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
STUDY=experiments/contrastive_gap
RUNS=${RUNS:-runs/$STUDY}
# The grid (pre-registered in study.json): terms (uniformity, alignment) = (0, 0) and (1, 1), seeds 0-2.
.venv/bin/python -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/objective" --zip \
    --grid loss.terms.uniformity=0,0,0,1,1,1 --grid loss.terms.alignment=0,0,0,1,1,1 --grid seed=0,1,2,0,1,2
.venv/bin/python -m jaxclr.study "$STUDY" --collect "$RUNS"
