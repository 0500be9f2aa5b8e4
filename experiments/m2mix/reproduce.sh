#!/usr/bin/env bash
# m2mix: fine-tuning with geodesic multimodal mixup (Oh et al. 2023): pretrain CLIP on shapes once,
# fine-tune on digits with CLIP alone or CLIP + m2-mix / V-mix / L-mix, 3 seeds each.
# From a clean clone: bash experiments/m2mix/reproduce.sh   (RUNS=dir to put the runs elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
STUDY=experiments/m2mix
RUNS=${RUNS:-runs/$STUDY}
PY=.venv/bin/python
SHAPES=(--config.data.num_train=5000 --config.data.num_test=500)   # a 5,000-image shapes build at 32 px
# pretrain: the study model on shapes, 1,500 steps, one seed.
$PY -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/pretrain" --grid seed=0 "${SHAPES[@]}" \
    --config.data.name=jaxclr_shapes --config.data.flip=True --config.train.total_steps=1500 \
    --config.eval.every=1500 --config.checkpoint.every=1500
# finetune (pre-registered in study.json): 300 steps on digits from the shapes params, weight 0.1 for
# the mixup term, s' = 1/0.07 for the mixed logits, lam ~ Beta(0.5, 0.5); shapes zero-shot measured after.
$PY -m jaxclr.sweep --config=configs/clip.py:study --workdir="$RUNS/finetune" --zip "${SHAPES[@]}" \
    --config.train.init_from="$RUNS/pretrain/seed=0" --config.eval.zeroshot_datasets='("jaxclr_shapes:test",)' \
    --config.train.total_steps=300 --config.optim.lr=5e-4 --config.optim.warmup_steps=30 \
    --config.eval.every=300 --config.checkpoint.every=300 --config.loss.mix_scale=14.285714285714286 \
    --grid loss.terms.m2mix=0,0,0,0.1,0.1,0.1,0,0,0,0,0,0 --grid loss.terms.vmix=0,0,0,0,0,0,0.1,0.1,0.1,0,0,0 \
    --grid loss.terms.lmix=0,0,0,0,0,0,0,0,0,0.1,0.1,0.1 --grid seed=0,1,2,0,1,2,0,1,2,0,1,2
$PY -m jaxclr.study "$STUDY" --collect "$RUNS"
