#!/usr/bin/env bash
# cnnlab's GPU check: the CUDA path end to end on one GPU in a few minutes, one table at the end.
#
#   bash scripts/gpu_check.sh --out DIR        # DIR gets gpu_check.md, gpu_check.json, gpu_check.log
#   bash scripts/gpu_check.sh --dry-run        # the commands and the planned table, nothing run
#   bash scripts/gpu_check.sh --help           # every option (--only, --skip, --budget, --deps, ...)
#
# It runs this source tree (PYTHONPATH=<repo>) with $PYTHON, else python3, else python; it
# installs nothing and needs no network. Exit 0: no check failed; 1: a check failed, or no CUDA
# device (without --allow-cpu) or a missing package; 2: bad arguments.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if command -v python3 >/dev/null 2>&1; then py=python3; else py=python; fi
fi
export PYTHONUNBUFFERED=1
exec "$py" "$here/gpu_check.py" "$@"
