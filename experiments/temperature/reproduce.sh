#!/usr/bin/env bash
# temperature: a fixed logit scale swept over 3, 10, 30, 100 (Wang & Liu 2021), study preset, 3 seeds.
# From a clean clone: bash experiments/temperature/reproduce.sh   (RUNS=dir to put the runs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
STUDY=experiments/temperature
RUNS=${RUNS:-runs/$STUDY}
# The grid (pre-registered in study.json): learn_scale off, init_scale in {3, 10, 30, 100}, seeds 0-2.
.venv/bin/python -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/scale" \
    --config.model.learn_scale=False --grid model.init_scale=3,10,30,100 --grid seed=0,1,2
.venv/bin/python -m jaxclr.study "$STUDY" --collect "$RUNS"
