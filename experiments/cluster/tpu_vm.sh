#!/usr/bin/env bash
# Data-parallel jepa_jax training on a Cloud TPU VM slice (all workers at once).
#
#   experiments/cluster/tpu_vm.sh TPU_NAME ZONE [--config.KEY=VALUE ...]
#   CONFIG=configs/gradient.py WORKDIR=runs/grad experiments/cluster/tpu_vm.sh my-v4-32 us-central2-b
#
# Needs an existing TPU VM (gcloud compute tpus tpu-vm create ...) and the
# gcloud CLI. Copies the committed files of this repository to every worker,
# installs it with the `tpu` extra (jax[tpu]) and starts the same command on
# every worker. jax.distributed.initialize() (--config.parallel.multihost=True)
# detects the slice's workers by itself. The global batch (train.batch_size)
# must divide by the number of TPU chips; only worker 0 writes to WORKDIR
# (on worker 0's disk: copy it back with `gcloud compute tpus tpu-vm scp`).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 TPU_NAME ZONE [--config.KEY=VALUE ...]" >&2
  exit 2
fi
TPU=$1
ZONE=$2
shift 2
CONFIG=${CONFIG:-configs/gentle.py}
WORKDIR=${WORKDIR:-runs/tpu}
MODE=${MODE:-jit}                     # jit (recommended) or pmap
REMOTE_DIR=jepa_jax

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ARCHIVE=$(mktemp --suffix=.tar.gz)
trap 'rm -f "${ARCHIVE}"' EXIT
git -C "${ROOT}" archive --format=tar.gz -o "${ARCHIVE}" HEAD

EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm scp "${ARCHIVE}" "${TPU}:~/jepa_jax.tar.gz" \
  --zone="${ZONE}" --worker=all
gcloud compute tpus tpu-vm ssh "${TPU}" --zone="${ZONE}" --worker=all --command="
  set -e
  mkdir -p ~/${REMOTE_DIR} && tar -xzf ~/jepa_jax.tar.gz -C ~/${REMOTE_DIR}
  cd ~/${REMOTE_DIR}
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/python -m jepa_jax.main --config=${CONFIG} --workdir=${WORKDIR} \
    --config.parallel.multihost=True --config.parallel.mode=${MODE} \
    --config.train.progress_bar=False${EXTRA}"
