#!/usr/bin/env bash
# Train on one machine: one process on all local devices, or NPROC local processes.
#
#   experiments/launch/single_node.sh --config=configs/clip.py:tiny --workdir=runs/tiny [--config.x=y ...]
#   NPROC=2 experiments/launch/single_node.sh --config=configs/clip.py:tiny --workdir=runs/tiny2
#
# Arguments go to `python -m jaxclr.train` unchanged; CONFIG=... and WORKDIR=... are added as
# --config/--workdir when set; relative paths are from the repository root.
# NPROC > 1 runs the multi-process code path on one machine (JAX_COORDINATOR_ADDRESS=localhost:PORT,
# JAX_NUM_PROCESSES, JAX_PROCESS_ID): with GPUs each process gets GPUs/NPROC of them
# (JAX_LOCAL_DEVICE_IDS); without, each runs on CPU devices (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=4).
# ACCEL (tpu, cuda12, or empty for CPU) picks what `make install` puts in .venv; by default it is
# cuda12 when nvidia-smi works, else empty. Optional: PORT (default 12355).
set -euo pipefail
cd "$(dirname "$0")/../.."
NPROC=${NPROC:-1} PORT=${PORT:-12355}
ngpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  ngpu=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
fi
if [[ -z ${ACCEL+set} ]] && ((ngpu > 0)); then ACCEL=cuda12; fi

args=()
if [[ -n ${CONFIG:-} ]]; then args+=("--config=$CONFIG"); fi
if [[ -n ${WORKDIR:-} ]]; then args+=("--workdir=$WORKDIR"); fi
args+=("$@")

make ACCEL="${ACCEL:-}" install
if ((NPROC == 1)); then exec .venv/bin/python -m jaxclr.train "${args[@]}"; fi
if ((ngpu > 0 && ngpu % NPROC)); then echo "NPROC=$NPROC does not divide the $ngpu GPUs" >&2; exit 2; fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for ((i = 0; i < NPROC; i++)); do
  gpus=()  # this process's share of the GPUs
  if ((ngpu > 0)); then gpus=("JAX_LOCAL_DEVICE_IDS=$(seq -s, $((i * ngpu / NPROC)) $(((i + 1) * ngpu / NPROC - 1)))"); fi
  env JAX_COORDINATOR_ADDRESS="localhost:$PORT" JAX_NUM_PROCESSES="$NPROC" JAX_PROCESS_ID="$i" "${gpus[@]}" \
    .venv/bin/python -m jaxclr.train "${args[@]}" &
  pids+=("$!")
done
for _ in "${pids[@]}"; do
  wait -n || { status=$?; echo "a process exited with status $status; stopping the others" >&2; exit "$status"; }
done
