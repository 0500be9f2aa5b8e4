#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM slice (a pod slice or a single host).
#
#   TPU=my-v4-32 ZONE=us-central2-b REPO=https://github.com/ORG/jaxclr.git \
#     experiments/launch/tpu_pod.sh --config=configs/clip.py:b16 --workdir=gs://BUCKET/runs/b16 \
#       --config.data.data_dir=gs://BUCKET/tfds --config.mesh.fsdp=8
#
# Arguments go to `python -m jaxclr.train` unchanged; CONFIG=... and WORKDIR=... are added as
# --config/--workdir when set. Use gs:// paths: each worker has its own disk.
# On every worker it clones REPO (or updates it to REF), runs `make ACCEL=tpu install` (jax[tpu] +
# the gcs extra for gs://) and starts one process with JAXCLR_DISTRIBUTED=1, so that
# jax.distributed.initialize() finds the slice from the TPU metadata server.
# Optional: REF (branch, tag or commit; default main), PROJECT, DIR (checkout on the workers;
# default jaxclr), PYTHON (>= 3.11 on the workers; default python3).
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE to its zone}" "${REPO:?set REPO to a git URL of jaxclr}"
REF=${REF:-main} DIR=${DIR:-jaxclr} PYTHON=${PYTHON:-python3}

args=()
if [[ -n ${CONFIG:-} ]]; then args+=("--config=$CONFIG"); fi
if [[ -n ${WORKDIR:-} ]]; then args+=("--workdir=$WORKDIR"); fi
args+=("$@")

# The remote command; q shell-quotes values (printf %q) for the workers' bash.
q() { local s=""; if (($#)); then printf -v s '%q ' "$@"; fi; printf '%s' "${s% }"; }
remote=$(cat <<REMOTE
set -euo pipefail
[ -d $(q "$DIR")/.git ] || git clone --quiet $(q "$REPO" "$DIR")
cd $(q "$DIR") && git fetch --quiet origin $(q "$REF") && git checkout --quiet --force FETCH_HEAD
make ACCEL=tpu PYTHON=$(q "$PYTHON") install
.venv/bin/python -c 'import gcsfs' 2>/dev/null || .venv/bin/python -m pip install --quiet -e '.[gcs]'
JAXCLR_DISTRIBUTED=1 .venv/bin/python -m jaxclr.train $(q "${args[@]}")
REMOTE
)
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all --command="$remote"
