#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): ResNet-pair throughput vs the seed-style
# loop (online teacher and cached views), bf16 autocast, the logit cache's host sync before /
# after, trials per hour at 1, 2, 4, 8 trials on one card. At most 8 minutes on one H100.
#   bash benchmarks/gpu_check.sh             # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run   # the CPU rehearsal (tiny sizes, no time limit)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export RAY_AUTH_MODE=disabled
case " $* " in
  *" --dry-run "*) exec "$PY" -m benchmarks.gpu_check "$@" ;;
  *) exec timeout 480 "$PY" -m benchmarks.gpu_check "$@" ;;  # the 8-minute budget of a lent card
esac
